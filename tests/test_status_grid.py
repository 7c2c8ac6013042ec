"""The status grid: results, the job registry and squeue folded into one grid per workload."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cudagraph_bench import status_grid as S
from cudagraph_bench.__main__ import main
from cudagraph_bench.cells import Cell
from helpers_results import write
from snakemake_executor_plugin_submitit.registry import DEFAULT_FOLDER, REGISTRY_FILE

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

REGISTRY = f"{DEFAULT_FOLDER}/{REGISTRY_FILE}"  # where the executor keeps it unless told otherwise


def small_config() -> dict:
    """One GPU, the graph pool, the batch sweep and startup: 10 cells."""
    config = copy.deepcopy(BASE)
    config["study"].update(gpus=["h200"], backends=["graph_pool"], workloads=["latency", "startup"])
    config["study"]["modes"] = ["eager", "cudagraph"]
    return config


def cell(mode: str, bs: int | None, workload: str = "latency") -> Cell:
    return Cell("h200", "graph_pool", workload, mode, bs)


@pytest.fixture
def root(tmp_path) -> Path:
    write(tmp_path, cell("eager", 1), "ok", {"decode_step_ms_median": 1.0}, slurm_job_id="77")
    write(tmp_path, cell("cudagraph", 1), "unsupported", reason="CUDA is not available on this node")
    write(tmp_path, cell("cudagraph", 4), "unsupported", reason="CUDA is not available on this node")
    write(tmp_path, cell("eager", 4), "oom", reason="CUDA out of memory")
    write(tmp_path, cell("eager", None, "startup"), "error", reason="server died")
    corrupt = tmp_path / cell("eager", 64).path
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_text("{")
    registry = {
        cell("eager", 16).path: {"job_id": "101", "launcher": "slurm", "folder": "x"},
        cell("cudagraph", 16).path: {"job_id": "102", "launcher": "slurm", "folder": "x"},
        cell("cudagraph", 64).path: {"job_id": "103", "launcher": "slurm", "folder": "x"},
        cell("cudagraph", None, "startup").path: {"job_id": str(os.getpid()), "launcher": "local", "folder": "x"},
        cell("eager", 1).path: {"job_id": "99", "launcher": "slurm", "folder": "x"},  # stale: has a result
    }
    (tmp_path / REGISTRY).parent.mkdir(parents=True)
    (tmp_path / REGISTRY).write_text(json.dumps(registry))
    return tmp_path


def fake_squeue(calls):
    def squeue(ids):
        calls.append(sorted(ids))
        return {"101": "PENDING", "102": "RUNNING"}  # 103 has left the queue without a result

    return squeue


def test_states_from_results_registry_and_queue(root):
    calls = []
    states, warnings = S.cell_states(small_config(), root, squeue=fake_squeue(calls))
    got = {(s.cell.workload, s.cell.mode, s.cell.batch_size): (s.state, s.job) for s in states}
    assert got == {
        ("latency", "eager", 1): ("done", "slurm 77"),
        ("latency", "eager", 4): ("OOM", None),
        ("latency", "eager", 16): ("pending", "slurm 101"),
        ("latency", "eager", 64): ("corrupt", None),
        ("latency", "cudagraph", 1): ("unsupported", None),
        ("latency", "cudagraph", 4): ("unsupported", None),
        ("latency", "cudagraph", 16): ("running", "slurm 102"),
        ("latency", "cudagraph", 64): ("lost", "slurm 103"),
        ("startup", "eager", None): ("error", None),
        ("startup", "cudagraph", None): ("running", f"local {os.getpid()}"),
    }
    assert calls == [["101", "102", "103"]]  # one squeue call, for the Slurm jobs without a result
    assert warnings == []


def test_grid_text(root):
    text = S.status_text(small_config(), root, squeue=fake_squeue([]))
    assert "| h200 | graph_pool | eager | done | OOM [1] | pending (slurm 101) | corrupt [2] |" in text
    assert "| h200 | graph_pool | cudagraph | unsupported [3] | unsupported [3] | running (slurm 102) |" in text
    assert "## startup" in text and "| GPU | Backend | Mode | cell |" in text
    assert "[3] unsupported: CUDA is not available on this node" in text  # one note per distinct reason
    assert "[1] OOM: CUDA out of memory" in text
    assert "1 done, 2 running, 1 pending, 2 unsupported, 1 OOM, 1 error, 1 corrupt, 1 lost (of 10 cells)" in text


def test_without_squeue_jobs_are_submitted_with_a_warning(root):
    text = S.status_text(small_config(), root, squeue=lambda ids: None)
    assert "submitted (slurm 101)" in text and "Warning: squeue unavailable" in text


def test_no_registry_means_missing(tmp_path):
    states, _ = S.cell_states(small_config(), tmp_path, squeue=lambda ids: pytest.fail("no jobs to ask about"))
    assert {s.state for s in states} == {"missing"}


def test_unreadable_registry_is_a_warning_not_a_crash(root):
    (root / REGISTRY).write_text("[")
    states, warnings = S.cell_states(small_config(), root, squeue=fake_squeue([]))
    assert warnings and "unreadable" in warnings[0]
    assert sum(s.state == "missing" for s in states) == 4


def test_write_and_print_give_the_same_grid(root, capsys):
    text = S.print_status(small_config(), root, squeue=fake_squeue([]))
    assert capsys.readouterr().out == text == (root / S.STATUS_MD).read_text()


class FakeRun:
    def __init__(self, rc=0, stdout="", stderr=""):
        self.result = subprocess.CompletedProcess([], rc, stdout, stderr)
        self.cmds = []

    def __call__(self, cmd, **kw):
        self.cmds.append(cmd)
        return self.result


def test_query_squeue_parses_one_call(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: "/usr/bin/squeue")
    run = FakeRun(stdout="101|PENDING\n102|RUNNING\n")
    assert S.query_squeue(["102", "101"], run=run) == {"101": "PENDING", "102": "RUNNING"}
    assert run.cmds == [["squeue", "--noheader", "--format=%i|%T", "--jobs=101,102"]]
    assert S.query_squeue(["5"], run=FakeRun(1, stderr="slurm_load_jobs error: Invalid job id specified")) == {}
    assert S.query_squeue(["5"], run=FakeRun(1, stderr="could not contact controller")) is None


def test_query_squeue_without_squeue(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    assert S.query_squeue(["1"]) is None


def test_status_verb(root, tmp_path, capsys, monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    monkeypatch.setattr(S.shutil, "which", lambda name: None)  # no Slurm here
    assert main(["status", "--config", str(config), "--results", str(root / "results")]) == 0
    out = capsys.readouterr().out
    assert "## latency" in out and out == (root / S.STATUS_MD).read_text()


def test_status_verb_takes_the_results_folder_from_the_config(root, capsys, monkeypatch):
    """The local profile's config writes the local run's grid; the default config never touches it."""
    monkeypatch.chdir(root)
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    local = root / "results/local/status.md"
    local.parent.mkdir(parents=True)
    local.write_text("the local run's grid\n")
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    assert main(["status", "--config", str(config)]) == 0
    assert "| h200 | graph_pool | eager | done |" in (root / "results/status.md").read_text()
    assert local.read_text() == "the local run's grid\n"
    config.write_text(yaml.safe_dump(dict(small_config(), results_dir="results/local")))
    assert main(["status", "--config", str(config)]) == 0
    assert "0 done" not in local.read_text() and "10 missing" in local.read_text()  # no results there yet


def test_states_from_the_summary_equal_those_from_the_files(root):
    """The `status` rule reads summary.csv; the grid must be the one the result files give."""
    from cudagraph_bench import aggregate as agg

    (root / cell("eager", 64).path).unlink()  # a corrupt file never reaches a summary
    (root / REGISTRY).unlink()
    paths = [p for p in agg.find_result_files(root)]
    summary = agg.read_summary(agg.write_summary(agg.aggregate(root, paths)[1], root / "results/summary.csv"))
    from_files = S.status_text(small_config(), root, squeue=lambda ids: pytest.fail("no queue"))
    from_summary = S.status_text(small_config(), root, squeue=lambda ids: pytest.fail("no queue"), summary=summary)
    assert from_summary == from_files and "done" in from_summary and "OOM [" in from_summary


def test_the_status_prints_the_job_time_per_backend_mode_and_workload(root):
    # each helper result ran from 00:00:00 to 00:01:00 (provenance), and none records wall_s
    text = S.status_text(small_config(), root, squeue=lambda ids: {})
    assert "## Job time of the measured cells" in text
    assert "| h200 | graph_pool | latency | eager | 2 | 0.033 | 120 | — |" in text  # bs1 ok + bs4 oom
    assert "| h200 | graph_pool | latency | cudagraph | 2 | 0.033 | 120 | — |" in text  # no measured_s
    assert "in all 0.083 h (300 s)" in text  # 5 readable results; the corrupt one has none


def test_recorded_wall_time_wins_over_the_timestamps():
    from cudagraph_bench.aggregate import job_wall_s

    prov = {"started_utc": "2030-01-01T00:00:00+00:00", "finished_utc": "2030-01-01T00:01:00+00:00"}
    assert job_wall_s(prov) == 60.0
    assert job_wall_s(prov | {"wall_s": 12.5}) == 12.5
    assert job_wall_s({}) is None


def test_the_share_outside_the_measurement_comes_from_what_each_cell_measured():
    from cudagraph_bench.aggregate import measured_s

    assert measured_s("latency", "graph_pool", {"measured_s": 3.0, "startup_s": 9.0}) == 3.0
    assert measured_s("startup", "vllm", {"startup_s": 47.0}) == 47.0
    assert measured_s("serving", "vllm", {"serving_duration_s": 20.0}) == 20.0
    assert measured_s("latency", "vllm", {"e2e_latency_s_mean": 0.5, "n_iters": 10.0}) == 5.0
    assert measured_s("latency", "graph_pool", {"e2e_latency_s_mean": 0.5}) is None
    cells = [
        S.CellState(Cell("h200", "vllm", "startup", "eager"), "done", wall_s=50.0, measured_s=45.0),
        S.CellState(Cell("h200", "vllm", "serving_inf", "eager"), "done", wall_s=100.0, measured_s=20.0),
    ]
    text = S.render_job_time(cells)
    assert "| h200 | vllm | serving_inf | eager | 1 | 0.028 | 100 | 80% |" in text
    assert "h200 vllm 0.042 h (outside the measurement: 57%)" in text  # 1 - 65 / 150
    # a cell that records no measured time (a check) leaves the share to the cells that do, and says so
    check = S.CellState(Cell("h200", "vllm", "check", "cudagraph"), "done", wall_s=90.0, measured_s=None)
    text = S.render_job_time([*cells, check])
    assert "h200 vllm 0.067 h (outside the measurement: 57% (2 of 3 cells))" in text
    assert "| h200 | vllm | check | cudagraph | 1 | 0.025 | 90 | — |" in text


def test_the_registry_is_read_from_the_executors_folder_setting(root, capsys):
    """A run with snakemake --submitit-folder elsewhere: status --submitit-folder finds its jobs."""
    elsewhere = root / "scratch" / "submitit"
    elsewhere.mkdir(parents=True)
    (root / REGISTRY).rename(elsewhere / REGISTRY_FILE)
    lost, _ = S.cell_states(small_config(), root, squeue=fake_squeue([]))
    found, _ = S.cell_states(small_config(), root, squeue=fake_squeue([]), folder="scratch/submitit")
    key = ("latency", "cudagraph", 16)
    by = {(s.cell.workload, s.cell.mode, s.cell.batch_size): s for s in found}
    assert by[key].job == "slurm 102"
    assert {(s.cell.workload, s.cell.mode, s.cell.batch_size): s.state for s in lost}[key] == "missing"
