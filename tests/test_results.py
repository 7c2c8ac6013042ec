"""Result files: schema, atomic writes, checked reads."""

import json
import os

import pytest
from cudagraph_bench.cells import Cell
from cudagraph_bench.results import ResultFileError, load_result, make_result, provenance, write_result

CELL = Cell("local", "graph_pool", "latency", "eager", 4)


def result(**kw):
    kw.setdefault("metrics", {"decode_step_ms_median": 1.5})
    return make_result(
        CELL, "latency", kw.pop("status", "ok"), prov=provenance("abc", "2026-01-01T00:00:00+00:00"), **kw
    )


def test_round_trip(tmp_path):
    path = tmp_path / CELL.path
    write_result(path, result())
    back = load_result(path, tmp_path)
    assert back["metrics"] == {"decode_step_ms_median": 1.5}
    assert back["provenance"]["config_hash"] == "abc"
    assert back["provenance"]["cpu_model"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_status_other_than_ok_needs_a_reason_and_no_metrics(tmp_path):
    with pytest.raises(ResultFileError, match="reason"):
        write_result(tmp_path / CELL.path, result(status="oom", metrics={}))
    with pytest.raises(ResultFileError):
        write_result(tmp_path / CELL.path, result(status="oom", reason="x", metrics={"a": 1.0}))


def test_nan_metric_is_refused():
    with pytest.raises(ValueError, match="not a finite number"):
        result(metrics={"x_ms": float("nan")})


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / CELL.path
    write_result(path, result())
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_result(path, result(metrics={"decode_step_ms_median": 9.0}))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_corrupt_and_misplaced_files_are_named(tmp_path):
    path = tmp_path / CELL.path
    path.parent.mkdir(parents=True)
    path.write_text('{"status": "ok", "metr')
    with pytest.raises(ResultFileError, match=str(path)):
        load_result(path, tmp_path)
    other = tmp_path / Cell("local", "graph_pool", "latency", "eager", 16).path
    write_result(path, result())
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text(path.read_text())
    with pytest.raises(ResultFileError, match="its path names"):
        load_result(other, tmp_path)
    data = json.loads(path.read_text())
    data["status"] = "fine"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="does not match the result schema") as e:
        load_result(path, tmp_path)
    assert str(path) in str(e.value)
