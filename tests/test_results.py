"""Result files: schema, atomic writes, checked reads."""

import copy
import json
import os

import jsonschema
import pytest
import yaml
from cudagraph_bench import results as R
from cudagraph_bench.cells import Cell
from cudagraph_bench.results import ResultFileError, load_result, make_result, provenance, write_result
from helpers_results import result as helper_result

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


# ---- the quick schema check (fastjsonschema) against the full one (jsonschema)


def _mutations(doc: dict):
    yield doc
    for key in list(doc):
        d = copy.deepcopy(doc)
        del d[key]
        yield d
    for path, value in [
        (("status",), "unsupported"),  # not ok, but no reason and metrics present
        (("reason",), "why"),  # ok with a reason
        (("reason",), ""),
        (("schema_version",), 2),
        (("kind",), "training"),
        (("cell", "batch_size"), 0),
        (("cell", "batch_size"), "4"),
        (("cell", "mode"), "fast"),
        (("cell", "extra"), 1),
        (("metrics", "x_ms"), "1"),
        (("metrics", "x_ms"), None),
        (("provenance", "gpu_count"), -1),
        (("provenance", "git_dirty"), "no"),
        (("provenance", "packages"), {"torch": 1}),
        (("extra",), {}),
        (("details",), []),
    ]:
        d = copy.deepcopy(doc)
        target = d
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        yield d
    d = copy.deepcopy(doc)
    del d["provenance"]["host"]
    yield d


def test_quick_check_never_accepts_what_the_schema_rejects():
    schema = yaml.safe_load(R.SCHEMA_PATH.read_text())
    full = jsonschema.Draft202012Validator(schema)
    quick = R.quick_valid
    base = json.loads(json.dumps(helper_result(CELL, "ok", {"x_ms": 1.0})))
    n_invalid = 0
    for doc in _mutations(base):
        valid = full.is_valid(doc)
        n_invalid += not valid
        assert not (quick(doc) and not valid), doc
        assert quick(doc) == valid, doc  # (stricter would only be slower; equal is what we expect)
    assert n_invalid >= 15


def test_fast_path_switches_off_for_keywords_it_does_not_know():
    assert R._fast_compatible({"type": "object", "properties": {"a": {"type": "string"}}})
    assert not R._fast_compatible({"properties": {"a": {"unevaluatedProperties": False}}})
    assert not R._fast_compatible({"allOf": [{"prefixItems": [{}]}]})
    assert not R._fast_compatible({"items": [{"type": "string"}]})


def test_rerun_errors_sets_aside_failed_and_invalid_results_only(tmp_path):
    from cudagraph_bench.rerun import set_aside_failed
    from helpers_results import write

    ok, failed, broken = (Cell("g", "graph_pool", "latency", "eager", bs) for bs in (1, 4, 16))
    write(tmp_path, ok, "ok", {"decode_step_ms_median": 5.0})
    write(tmp_path, failed, "error", reason="server died")
    write(tmp_path, broken, "ok", {"decode_step_ms_median": 5.0})
    doc = json.loads((tmp_path / broken.path).read_text())
    doc["status"] = "fine"  # valid JSON, not a valid result
    (tmp_path / broken.path).write_text(json.dumps(doc))
    moved = set_aside_failed([c.path for c in (ok, failed, broken)], tmp_path)
    assert [line.split(" (")[0] for line in moved] == [failed.path, broken.path]
    assert (tmp_path / ok.path).exists() and not (tmp_path / failed.path).exists()
    assert len(list((tmp_path / "results" / "superseded").rglob("*.json"))) == 2
