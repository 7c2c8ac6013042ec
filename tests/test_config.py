"""The config schema and cross-checks: each class of bad value is refused, naming the key."""

import copy
from pathlib import Path

import pytest
import yaml
from cudagraph_bench import cells
from cudagraph_bench import config as cgb_config
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/cudagraph_bench/schemas/config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def refused(config) -> str:
    with pytest.raises(cells.ConfigError) as e:
        cgb_config.validate(config)
    return str(e.value)


def test_shipped_config_is_valid(config):
    validate(copy.deepcopy(config), SCHEMA)
    cells.check_config(config)


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c["study"].__setitem__("batch_sizes", [1, 0]), "batch_sizes"),  # out of range
        (lambda c: c["study"].__setitem__("batch_sizes", "1,4"), "batch_sizes"),  # wrong type
        (lambda c: c["study"].__setitem__("modes", ["eager", "graphs"]), "graphs"),  # not in enum
        (lambda c: c["study"].__setitem__("batchsizes", [1]), "batchsizes"),  # unknown (typo'd) key
        (lambda c: c["study"].pop("model"), "model"),  # missing key
        (lambda c: c["gpu_types"]["h200"].__setitem__("partition", "gpu h200"), "partition"),  # space
        (lambda c: c["gpu_types"]["h200"].__setitem__("partition", "gpu-h200;rm"), "partition"),  # shell char
        (lambda c: c["gpu_types"]["h200"].__setitem__("gres", "gpu:H200:one"), "gres"),  # malformed GRES
        (lambda c: c["gpu_types"]["h200"].__setitem__("account", "$(whoami)"), "account"),
        (lambda c: c["gpu_types"]["h200"].__setitem__("time_min", 0), "time_min"),
        (lambda c: c["gpu_types"]["h200"]["extra_sbatch"].__setitem__("exclusive", "yes please"), "exclusive"),
        (lambda c: c["workloads"]["latency"].__setitem__("input_len", -1), "input_len"),
        (lambda c: c["workloads"]["latency"].__setitem__("request_rate", 6), "request_rate"),  # not a latency key
        (lambda c: c["workloads"]["serving_rr6"].__setitem__("request_rate", "fast"), "request_rate"),
        (lambda c: c["models"]["tiny"].__setitem__("dtype", "fp8"), "dtype"),
        (lambda c: c["vllm"].__setitem__("gpu_memory_utilization", 1.5), "gpu_memory_utilization"),
        (lambda c: c["vllm"].__setitem__("profile_batch_sizes", [1, 0]), "profile_batch_sizes"),
        (lambda c: c["vllm"].__setitem__("profile_batch_sizes", [1, 1]), "profile_batch_sizes"),  # a repeat
    ],
)
def test_schema_refuses_bad_values_naming_the_key(config, mutate, expect):
    mutate(config)
    assert expect in refused(config)


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c["study"].__setitem__("gpus", ["h200", "h300"]), "study.gpus[1]: 'h300'"),
        (lambda c: c["study"].__setitem__("workloads", ["latency", "nope"]), "study.workloads[1]: 'nope'"),
        (lambda c: c["study"].__setitem__("model", "llama-9"), "study.model: 'llama-9'"),
        (lambda c: c["models"]["llama-3.1-8b"].__setitem__("n_kv_heads", 5), "n_kv_heads"),
        (lambda c: c["workloads"]["latency"].__setitem__("input_len", 5000), "max_seq_len"),
    ],
)
def test_cross_references_are_checked(config, mutate, expect):
    mutate(config)
    with pytest.raises(cells.ConfigError, match=None) as e:
        cells.check_config(config)
    assert expect in str(e.value)


@pytest.mark.parametrize(
    "mutate, line",
    [
        (lambda c: c.__setitem__("studdy", {}), "studdy: unknown key (allowed: gpu_types, graph_pool,"),
        (lambda c: c["study"].__setitem__("modes", ["eager", "graphs"]), "study.modes[1]: 'graphs' is not allowed (allowed: eager, cudagraph, compile_nograph, piecewise, full_decode_only)"),
        (lambda c: c["gpu_types"]["h200"].__setitem__("time_min", 0), "gpu_types.h200.time_min: 0 is less than the minimum of 1"),
        (lambda c: c["study"].pop("model"), "study: missing key model"),
    ],
)  # fmt: skip
def test_each_schema_error_is_one_line_naming_key_value_and_what_is_allowed(config, mutate, line):
    mutate(config)
    message = refused(config)
    assert message.splitlines() == [line] or message.startswith(line), message
    assert len(message) < 300  # no dump of the schema or the config


def test_several_errors_give_one_line_each(config):
    config["study"]["modes"] = ["graphs"]
    config["study"]["model"] = 3
    assert len(refused(config).splitlines()) == 2


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("study:\n  gpus: [h200\n  model: tiny\n")
    with pytest.raises(cells.ConfigError, match=rf"^{bad}:3:8: not valid YAML"):
        cgb_config.load([REPO / "config/config.yaml", bad])


def test_the_snakefile_reports_schema_errors_without_a_dump(tmp_path):
    import subprocess
    import sys

    typo = tmp_path / "typo.yaml"
    typo.write_text("studdy: {}\n")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfiles", "config/config.yaml", str(typo)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "studdy: unknown key (allowed:" in text
    assert len(text.splitlines()) < 15, text


def test_validation_fills_in_defaults_in_one_pass_nested_ones_too():
    config = cgb_config.read_yaml(REPO / "config" / "config.yaml")
    del config["gpu_types"]["h200"]["gpus"], config["models"]["tiny"]["checkpoint"], config["results_dir"]
    out = cgb_config.validate(config)
    assert out["gpu_types"]["h200"]["gpus"] == 1 and out["models"]["tiny"]["checkpoint"] is None
    assert out["results_dir"] == "results" and out["rerun_errors"] is False


def test_the_schemas_are_package_data():
    import tomllib

    from cudagraph_bench import results

    package = REPO / "workflow" / "cudagraph_bench"
    assert cgb_config.SCHEMA_PATH.parent == results.SCHEMA_PATH.parent == package / "schemas"
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.yaml" in data["cudagraph_bench"]


def test_the_llama_preset_is_the_published_llama_3_1_8b_and_makes_vllms_config():
    """config.yaml's preset owns the shape; make_model_dir.py writes vLLM's config.json from it.
    The values here are meta-llama/Llama-3.1-8B-Instruct's published config.json."""
    import importlib.util

    path = Path("workflow/scripts/make_model_dir.py")
    spec = importlib.util.spec_from_file_location("make_model_dir", path)
    mmd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mmd)
    hf = mmd.hf_config(mmd.model_preset(["config/config.yaml"]))
    published = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                 "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
                 "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                 "torch_dtype": "bfloat16", "vocab_size": 128256, "max_position_embeddings": 131072}  # fmt: skip
    assert {k: hf[k] for k in published} == published and hf["head_dim"] == 128
