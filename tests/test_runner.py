"""The cell runner's outcomes that need no GPU: a GPU type that expects a GPU and finds none, and
the serving cells of one mode measured against one (fake) vLLM server."""

import io
import json
import os
import stat

import pytest
import yaml
from cudagraph_bench import cells
from cudagraph_bench.config import load as load_config
from cudagraph_bench.runner import run_cell, run_shared_server_cells


def _spec(gpu: str, workload: str = "latency", mode: str = "eager", bs: int | None = 1) -> dict:
    config = load_config(["config/config.yaml"])  # as a job sees it: validated, defaults filled in
    config["study"]["model"] = "tiny"
    return cells.job_spec(config, cells.Cell(gpu, "graph_pool", workload, mode, bs))


def test_a_cell_that_expects_a_gpu_and_sees_none_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    out = tmp_path / "r.json"
    result = run_cell(_spec("h200"), str(out), io.StringIO())
    assert result["status"] == "error"
    assert "CUDA_VISIBLE_DEVICES=''" in result["reason"] and "'local'" in result["reason"]
    assert "gpu_types.h200.gpus" in result["reason"]
    assert json.loads(out.read_text())["status"] == "error"


def test_the_local_gpu_type_measures_on_the_cpu_and_graph_cells_are_unsupported(tmp_path):
    eager = run_cell(_spec("local"), str(tmp_path / "e.json"), io.StringIO())
    assert eager["status"] == "ok" and eager["metrics"]["decode_step_ms_median"] > 0
    for workload, bs in (("check", None), ("capture_study", None)):
        r = run_cell(_spec("local", workload, "cudagraph", bs), str(tmp_path / f"{workload}.json"), io.StringIO())
        assert r["status"] == "unsupported" and "CUDA" in r["reason"]


def test_result_files_get_the_users_umask_not_0600(tmp_path, monkeypatch):
    import os

    old = os.umask(0o022)
    try:
        run_cell(_spec("local", "check", "cudagraph", None), str(tmp_path / "c.json"), io.StringIO())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o644


def test_every_backend_measure_takes_the_same_arguments():
    import inspect

    from cudagraph_bench.backends import torch_compile, vllm
    from cudagraph_bench.backends.graph_pool import measure as graph_pool

    params = [list(inspect.signature(m.measure).parameters) for m in (graph_pool, vllm, torch_compile)]
    assert params[0] == params[1] == params[2] == ["kind", "mode", "batch_size", "model", "workload", "settings", "log"]


FAKE_VLLM = os.path.abspath("tests/data/vllm/fake_vllm.py")


def _serving_specs(tmp_path) -> list[dict]:
    """The two serving cells (rr=inf, rr=6) of vLLM's cudagraph mode on the local GPU type, run by
    the fake `vllm` against a tiny model directory."""
    import sys

    config = yaml.safe_load(open("config/config.yaml"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    (model_dir / "tokenizer.json").write_text("{}")
    sg = tmp_path / "sg.json"
    sg.write_text("[]")
    config["models"][config["study"]["model"]]["vllm_model_dir"] = str(model_dir)
    config["vllm"] |= {"executable": f"{sys.executable} {FAKE_VLLM}", "sharegpt_path": str(sg),
                       "server_start_timeout_s": 20}  # fmt: skip
    config["study"]["workloads"] = ["serving_inf", "serving_rr6"]
    workloads = cells.shared_server_workloads(config, "vllm")
    assert workloads == ["serving_inf", "serving_rr6"]
    return [cells.job_spec(config, cells.Cell("local", "vllm", w, "cudagraph")) for w in workloads]


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    from cudagraph_bench.backends import vllm

    monkeypatch.setattr(vllm, "gpu_visible", lambda: True)
    monkeypatch.setenv("FAKE_VLLM_ARGV", str(tmp_path / "argv.jsonl"))
    monkeypatch.delenv("FAKE_VLLM", raising=False)
    return lambda: [json.loads(x)[:2] for x in (tmp_path / "argv.jsonl").read_text().splitlines()]


def test_the_serving_cells_of_one_mode_share_one_server(tmp_path, fake_vllm):
    specs, outs = _serving_specs(tmp_path), [str(tmp_path / "inf.json"), str(tmp_path / "rr6.json")]
    results = run_shared_server_cells(specs, outs, io.StringIO())
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert [a[0] for a in fake_vllm()] == ["serve", "bench", "bench"]  # one server, two benchmarks
    shared = results[0]["details"]["shared_server"]
    assert shared["cells"] == [cells.Cell(**s["cell"]).slug for s in specs]
    # each cell's wall time is its benchmark plus its share of the start-up: together, the job's time
    walls = [r["provenance"]["wall_s"] for r in results]
    assert sum(walls) == pytest.approx(shared["job_wall_s"], abs=0.01)


def test_a_rate_already_measured_is_kept_and_the_other_measured_alone(tmp_path, fake_vllm):
    specs, outs = _serving_specs(tmp_path), [str(tmp_path / "inf.json"), str(tmp_path / "rr6.json")]
    run_shared_server_cells(specs, outs, io.StringIO())
    kept = open(outs[0]).read()
    os.remove(outs[1])  # e.g. moved aside by rerun-errors
    (tmp_path / "argv.jsonl").unlink()
    (result,) = run_shared_server_cells(specs, outs, io.StringIO())
    assert result["cell"]["workload"] == "serving_rr6" and result["status"] == "ok"
    assert open(outs[0]).read() == kept
    assert [a[0] for a in fake_vllm()] == ["serve", "bench"]
    assert run_shared_server_cells(specs, outs, io.StringIO()) == []  # nothing missing: no server


def test_one_failed_rate_does_not_fail_the_other(tmp_path, fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "bench_fails_at_rate_6")
    specs, outs = _serving_specs(tmp_path), [str(tmp_path / "inf.json"), str(tmp_path / "rr6.json")]
    inf, rr6 = run_shared_server_cells(specs, outs, io.StringIO())
    assert inf["status"] == "ok" and rr6["status"] == "error" and "exited with code 1" in rr6["reason"]


def test_a_server_that_never_starts_fails_every_cell_it_serves(tmp_path, fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "serve_dies")
    specs, outs = _serving_specs(tmp_path), [str(tmp_path / "inf.json"), str(tmp_path / "rr6.json")]
    results = run_shared_server_cells(specs, outs, io.StringIO())
    assert [r["status"] for r in results] == ["error", "error"]
    assert all("during start-up" in r["reason"] for r in results)
    assert all(json.load(open(p))["status"] == "error" for p in outs)
