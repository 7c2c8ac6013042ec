"""The cell runner's outcomes that need no GPU: a GPU type that expects a GPU and finds none."""

import io
import json
import stat

import yaml
from cudagraph_bench import cells
from cudagraph_bench.runner import run_cell


def _spec(gpu: str, workload: str = "latency", mode: str = "eager", bs: int | None = 1) -> dict:
    config = yaml.safe_load(open("config/config.yaml"))
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
