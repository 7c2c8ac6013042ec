"""Matrix expansion and the cell <-> path round trip."""

import json
from pathlib import Path

import pytest
import yaml
from cudagraph_bench import cells
from cudagraph_bench.cells import Cell, cell_from_path, iter_cells

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_default_study_cell_count(config):
    # graph_pool: (latency 4 bs + latency_long 1 + startup 1) x 2 modes + check + capture_study = 14 per GPU
    # vllm:       (4 + 1 + 1 + serving 2) x 5 modes                                             = 40 per GPU
    # torch_compile: (4 + 1 + 1) x 3 modes                                                      = 18 per GPU
    assert len(list(iter_cells(config))) == 4 * (14 + 40 + 18)


def test_backends_only_get_what_they_can_do(config):
    all_cells = list(iter_cells(config))
    assert not [c for c in all_cells if c.backend == "graph_pool" and c.mode == "compile_nograph"]
    assert {c.backend for c in all_cells if c.mode in ("piecewise", "full_decode_only")} == {"vllm"}
    assert not [c for c in all_cells if c.backend == "graph_pool" and c.workload.startswith("serving")]
    assert {c.batch_size for c in all_cells if c.workload == "latency"} == {1, 4, 16, 64}
    assert {c.batch_size for c in all_cells if c.workload == "latency_long"} == {1}
    assert {c.batch_size for c in all_cells if c.workload in ("startup", "serving_inf")} == {None}


def test_cells_are_unique_and_ordered(config):
    all_cells = list(iter_cells(config))
    assert len(set(all_cells)) == len(all_cells)
    assert all_cells == list(iter_cells(config))


def test_path_round_trip(config):
    for cell in iter_cells(config):
        assert cell_from_path(cell.path) == cell


def test_path_names_the_cell():
    c = Cell("h200", "vllm", "latency", "eager", 16)
    assert c.path == "results/raw/h200/vllm/latency/eager/bs16.json"
    assert Cell("l40s", "graph_pool", "startup", "cudagraph").path.endswith("/startup/cudagraph/single.json")


@pytest.mark.parametrize("results_dir", ["results", "results/local", "out", "a/raw/b"])
def test_path_round_trip_under_any_results_dir(config, results_dir):
    for cell in iter_cells(config):
        path = cell.path_in(results_dir)
        assert path.startswith(f"{results_dir}/raw/")
        assert cells.split_result_path(path) == (results_dir, cell)
        assert cell_from_path(f"./{path}") == cell
    local = Cell("local", "graph_pool", "latency", "eager", 1).path_in("results/local")
    assert local == "results/local/raw/local/graph_pool/latency/eager/bs1.json"


def test_results_dir_of_config(config):
    assert cells.results_dir_of(config) == "results"
    assert cells.results_dir_of({}) == "results"  # the schema's default
    local = yaml.safe_load((REPO / "config/local.yaml").read_text())
    assert cells.results_dir_of(local) == "results/local"


def test_find_result_files_reads_one_results_dir_only(tmp_path):
    committed = Cell("h100", "vllm", "latency", "eager", 1)
    local = Cell("local", "graph_pool", "latency", "eager", 1)
    for path in (committed.path, local.path_in("results/local")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    assert cells.find_result_files(tmp_path) == [committed.path]
    assert cells.find_result_files(tmp_path, "results/local") == [local.path_in("results/local")]


def test_a_local_run_left_in_the_committed_raw_folder_is_named(tmp_path):
    assert cells.legacy_local_results(tmp_path) is None
    (tmp_path / "results/raw/local").mkdir(parents=True)
    msg = cells.legacy_local_results(tmp_path)
    assert "results/raw/local/" in msg and "results/local/raw/" in msg
    assert cells.legacy_local_results(tmp_path, "results/local") is None  # only the committed outputs care


@pytest.mark.parametrize(
    "bad", ["results/raw/h200/vllm/latency/eager/bs0.json", "results/raw/h200/vllm/latency/bs1.json", "x.json"]
)
def test_bad_paths_are_refused(bad):
    with pytest.raises(ValueError, match="not a result path"):
        cell_from_path(bad)


def test_job_spec_carries_what_the_job_needs(config):
    cell = Cell("h100", "vllm", "serving_inf", "cudagraph")
    spec = cells.job_spec(config, cell)
    assert spec["kind"] == "serving"
    assert spec["workload"]["request_rate"] == float("inf")
    assert spec["model"]["name"] == "llama-3.1-8b"
    assert spec["device_match"] == "H100"
    assert spec["config_hash"] == cells.config_hash(config)


def test_slurm_settings_follow_the_gpu_type(config):
    res = json.loads(cells.slurm_settings(config, "h200"))
    assert res["partition"] == "gpu-h200"
    assert res["gres"] == "gpu:H200:1"
    assert res["qos"] == "inferno"
    assert res["time_min"] == 60 and res["mem_gb"] == 64


def test_every_list_of_modes_is_cells_modes():
    root = Path(__file__).resolve().parent.parent / "workflow" / "cudagraph_bench" / "schemas"
    config_schema = yaml.safe_load((root / "config.schema.yaml").read_text())
    result_schema = yaml.safe_load((root / "result.schema.yaml").read_text())
    assert config_schema["properties"]["study"]["properties"]["modes"]["items"]["enum"] == list(cells.MODES)
    assert result_schema["properties"]["cell"]["properties"]["mode"]["enum"] == list(cells.MODES)
    assert {m for modes in cells.BACKEND_MODES.values() for m in modes} == set(cells.MODES)


def test_the_schemas_enumerate_the_codes_backends_kinds_statuses_and_results_folder():
    """The schemas list backends, workload kinds and result statuses for the user; the code owns
    them (cells.BACKEND_KINDS, results.STATUSES): the lists must agree."""
    from cudagraph_bench.results import STATUSES

    root = Path(__file__).resolve().parent.parent / "workflow" / "cudagraph_bench" / "schemas"
    config_schema = yaml.safe_load((root / "config.schema.yaml").read_text())["properties"]
    result_schema = yaml.safe_load((root / "result.schema.yaml").read_text())["properties"]
    kinds = {k for ks in cells.BACKEND_KINDS.values() for k in ks}
    assert set(config_schema["study"]["properties"]["backends"]["items"]["enum"]) == set(cells.BACKEND_KINDS)
    assert set(result_schema["cell"]["properties"]["backend"]["enum"]) == set(cells.BACKEND_KINDS)
    workload = config_schema["workloads"]["additionalProperties"]["properties"]["kind"]
    assert set(workload["enum"]) == set(result_schema["kind"]["enum"]) == kinds
    assert tuple(result_schema["status"]["enum"]) == STATUSES
    assert config_schema["results_dir"]["default"] == cells.DEFAULT_RESULTS_DIR
    assert set(cells.BACKEND_MODES) == set(cells.BACKEND_KINDS)


def test_the_config_schema_carries_the_executors_settings_contract():
    """gpu_types.<name> holds the Slurm settings the executor plugin reads (its SETTING_DEFAULTS
    own the keys and the values of absent ones): the schema has every key, with the same default."""
    from snakemake_executor_plugin_submitit.submission import SETTING_DEFAULTS

    root = Path(__file__).resolve().parent.parent / "workflow" / "cudagraph_bench" / "schemas"
    gpu_type = yaml.safe_load((root / "config.schema.yaml").read_text())["properties"]["gpu_types"]
    props, required = gpu_type["additionalProperties"]["properties"], gpu_type["additionalProperties"]["required"]
    for key, default in SETTING_DEFAULTS.items():
        assert key in props, key
        assert key in required or props[key].get("default") == default, (key, props[key].get("default"), default)


def test_the_shared_server_workloads_are_left_out_of_the_per_cell_rule():
    import re

    config = yaml.safe_load(open("config/config.yaml"))
    shared = cells.shared_server_workloads(config, "vllm")
    assert shared == [w for w in config["study"]["workloads"] if config["workloads"][w]["kind"] == "serving"]
    assert cells.shared_server_workloads(config, "graph_pool") == []
    pattern = re.compile(rf"raw/(?P<workload>{cells.workload_pattern(shared)})/eager/single\.json")
    for w in config["study"]["workloads"]:
        assert bool(pattern.fullmatch(f"raw/{w}/eager/single.json")) == (w not in shared), w
    assert pattern.fullmatch("raw/serving_inf2/eager/single.json")  # only the names themselves
    assert cells.workload_pattern([]) == cells.WORKLOAD_RE
