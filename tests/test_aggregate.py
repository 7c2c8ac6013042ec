"""Aggregation: read (checked), parse (pure), write. All numbers are synthetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cudagraph_bench import aggregate as agg
from cudagraph_bench.cells import Cell
from cudagraph_bench.results import ResultFileError
from helpers_results import capture_study_details, capture_summary, per_size, result, synthetic_study, write

REPO = Path(__file__).resolve().parents[1]
CELL = Cell("gpu_a", "graph_pool", "latency", "eager", 4)


@pytest.fixture
def study(tmp_path):
    synthetic_study(tmp_path)
    return tmp_path


def test_one_row_per_cell_sorted_with_all_columns(study):
    records, df = agg.aggregate(study)
    assert len(df) == len(records) == len(agg.find_result_files(study))
    head = agg.ID_COLUMNS + agg.STATE_COLUMNS
    assert list(df.columns[: len(head)]) == head
    tail = agg.PROVENANCE_COLUMNS + agg.FILE_COLUMNS
    assert list(df.columns[-len(tail) :]) == tail
    for col in ("decode_step_ms_median", "serving_output_tok_per_s", "startup_s"):
        assert df[col].dtype == "float64"
    assert str(df["batch_size"].dtype) == "Int64"
    keys = [agg.cell_key(r) for r in df.to_dict("records")]
    assert keys == sorted(keys, key=lambda k: (*k[:4], -1 if k[4] is None else k[4]))
    assert df["torch_version"].unique().tolist() == ["9.9.9"]
    assert df["path"].str.startswith("results/raw/").all()
    assert df["sha256"].str.len().eq(64).all()


def test_every_row_names_its_model_and_source(study):
    _, df = agg.aggregate(study)
    assert set(zip(df["gpu"], df["model"], df["source"], strict=True)) == {
        ("gpu_a", "synthetic-8b", "pipeline"),
        ("gpu_b", "synthetic-1b", "imported"),
    }
    imported = df[df["source"] == "imported"]
    assert (imported["imported_from"] == "results/old_driver/gpu_b.json").all()
    assert df.loc[df["source"] == "pipeline", "imported_from"].isna().all()


def test_check_and_capture_study_cells_get_a_row_each(study):
    _, df = agg.aggregate(study)
    rows = df[df["kind"].isin(["check", "capture_study"])].set_index(["gpu", "workload"])
    assert rows.loc[("gpu_a", "check"), "status"] == "ok" and rows.loc[("gpu_a", "check"), "checks_total"] == 20
    assert (
        rows.loc[("gpu_b", "check"), "status"] == "error" and "checks failed" in rows.loc[("gpu_b", "check"), "reason"]
    )
    assert rows.loc[("gpu_a", "capture_study"), "capture_sets"] == 4
    assert rows.loc[("gpu_b", "capture_study"), "status"] == "oom"


def test_a_file_without_its_model_name_is_named():
    res = result(CELL, "ok", {"x_ms": 1.0})
    del res["spec"]["model"]["name"]
    with pytest.raises(agg.AggregationError, match=r"results/raw/x\.json.*spec/model/name"):
        agg.parse_results([{"path": "results/raw/x.json", "result": res}])


def test_summary_reads_back_exactly(study, tmp_path):
    _, df = agg.aggregate(study)
    # text that pandas would otherwise read as a number or as missing
    df.loc[0, "git_commit"], df.loc[1, "slurm_job_id"], df.loc[2, "host"] = "1234567", "0077", "NA"
    back = agg.read_summary(agg.write_summary(df, tmp_path / "summary.csv"))
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.loc[1, "slurm_job_id"] == "0077" and back.loc[2, "host"] == "NA"


def test_a_summary_of_another_shape_is_refused(tmp_path):
    (tmp_path / "summary.csv").write_text("gpu,backend\nh100,vllm\n")
    with pytest.raises(agg.AggregationError, match="summary.csv.*no column model"):
        agg.read_summary(tmp_path / "summary.csv")


def test_aggregate_reads_its_results_dir_only(study):
    local = Cell("local", "graph_pool", "latency", "eager", 1)
    write(study, local, "ok", {"decode_step_ms_median": 1.0}, results_dir="results/local", model="tiny")
    _, committed = agg.aggregate(study)
    assert "local" not in set(committed["gpu"]) and "tiny" not in set(committed["model"])
    _, df = agg.aggregate(study, results_dir="results/local")
    assert df["path"].tolist() == ["results/local/raw/local/graph_pool/latency/eager/bs1.json"]
    assert df["model"].tolist() == ["tiny"]


def test_failed_cells_have_no_numbers(study):
    _, df = agg.aggregate(study)
    failed = df[df["status"] != "ok"]
    assert not failed.empty
    assert failed[agg.metric_columns(df)].isna().all().all()
    assert failed["reason"].notna().all()


def test_request_rate_inf_is_parsed(study):
    _, df = agg.aggregate(study)
    rates = df.groupby("workload")["request_rate"].first()
    assert rates["serving_inf"] == float("inf")
    assert rates["serving_rr6"] == 6.0


def test_corrupt_file_is_named(study):
    bad = study / "results/raw/gpu_a/vllm/startup/eager/single.json"
    bad.write_text('{"schema_version": 1, "cell": ')
    with pytest.raises(ResultFileError, match=r"results/raw/gpu_a/vllm/startup/eager/single\.json"):
        agg.aggregate(study)


def test_schema_invalid_file_is_named(study):
    bad = study / "results/raw/gpu_a/vllm/startup/cudagraph/single.json"
    doc = json.loads(bad.read_text())
    doc["metrics"]["startup_s"] = "sixty"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match=r"startup/cudagraph/single\.json.*metrics/startup_s"):
        agg.aggregate(study)


def test_file_at_the_wrong_path_is_named(study):
    src = study / CELL.path
    dst = study / Cell("gpu_a", "graph_pool", "latency", "eager", 8).path
    dst.write_text(src.read_text())
    with pytest.raises(ResultFileError, match=r"bs8\.json.*path names"):
        agg.aggregate(study)


def test_nan_metric_fails_loudly_naming_file(tmp_path):
    path = write(tmp_path, CELL, "ok", {"decode_step_ms_median": 1.0})
    path.write_text(path.read_text().replace('"decode_step_ms_median": 1.0', '"decode_step_ms_median": NaN'))
    # NaN is a JSON-schema "number", but never a measurement: reading the file refuses it
    with pytest.raises(ResultFileError, match=r"bs4\.json.*decode_step_ms_median is nan, not a finite number"):
        agg.read_results(tmp_path, [CELL.path])
    records = [{"path": CELL.path, "result": json.loads(path.read_text())}]  # a record not read by read_results
    with pytest.raises(agg.AggregationError, match=r"bs4\.json.*decode_step_ms_median.*not a finite number"):
        agg.parse_results(records)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r["metrics"].update(decode_step_ms_median="12ms"), "'12ms'"),
        (lambda r: r["metrics"].update(decode_step_ms_median=True), "True"),
        (lambda r: r.update(status="fine"), "'fine'"),
        (lambda r: r["cell"].update(batch_size=0), "cell/batch_size"),
        (lambda r: r.update(kind="training"), "'training'"),
        (lambda r: r["provenance"].update(host=42), "provenance/host"),
        (lambda r: r["spec"]["workload"].update(input_len="long"), "'long'"),
        (lambda r: r["metrics"].update(path=1.0), "'path'"),
    ],
)
def test_parse_names_file_and_repr_of_unexpected_value(mutate, where):
    res = result(CELL, "ok", {"decode_step_ms_median": 1.0})
    mutate(res)
    with pytest.raises(agg.AggregationError) as e:
        agg.parse_results([{"path": "results/raw/x.json", "result": res}])
    assert "results/raw/x.json" in str(e.value) and where in str(e.value)


def test_two_files_for_one_cell_are_refused():
    rec = {"path": "a.json", "result": result(CELL, "ok", {"x_ms": 1.0})}
    with pytest.raises(agg.AggregationError, match="b.json: holds the same cell as a.json"):
        agg.parse_results([rec, dict(rec, path="b.json")])


def test_parse_of_nothing_is_an_empty_table():
    df = agg.parse_results([])
    assert df.empty and list(df.columns[: len(agg.ID_COLUMNS)]) == agg.ID_COLUMNS


def test_summary_csv_is_deterministic_and_round_trips(study, tmp_path):
    _, df = agg.aggregate(study)
    a = agg.write_summary(df, tmp_path / "a" / "summary.csv").read_bytes()
    b = agg.write_summary(agg.aggregate(study)[1], tmp_path / "b" / "summary.csv").read_bytes()
    assert a == b
    back = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert len(back) == len(df)
    assert back["decode_step_ms_median"].sum() == pytest.approx(df["decode_step_ms_median"].sum())


# ---- the quick schema check must never accept what jsonschema rejects


# ---- capture details and studies


def test_capture_from_the_pipelines_own_shapes(study):
    records, _ = agg.aggregate(study)
    cap = agg.parse_capture_details(records)
    a = cap[cap["gpu"] == "gpu_a"]
    assert set(a["model"]) == {"synthetic-8b"}
    # startup cell: running totals in capture order (largest size first), then the pool's total
    startup = a[a["workload"] == "startup"]
    cum = startup[startup["series"] == "cumulative"]
    assert cum["n_graphs"].tolist() == list(range(1, 8))
    assert cum["label"].tolist()[:2] == ["64", "32,64"]
    total = capture_summary()
    assert cum["graph_memory_mb"].iloc[-1] == pytest.approx(total["memory_mb_total"])
    assert cum["capture_s"].iloc[-1] == pytest.approx(total["capture_s_total"])
    (cell,) = startup[startup["series"] == "cell"].to_dict("records")
    assert cell["n_graphs"] == 7 and cell["graph_memory_mb"] == pytest.approx(total["memory_mb_total"])
    # every latency cell's pool, too
    assert sorted(a.loc[(a["workload"] == "latency") & (a["series"] == "cell"), "batch_size"]) == [1, 4, 16, 64]
    # the capture_study cell: one row per set, n_graphs from the file (256 although sizes holds [1, 256])
    study_rows = a[a["series"] == "study"]
    assert study_rows["label"].tolist() == ["1", "1,4,16", "1,2,4,8,16,32,64", "1..256"]
    assert study_rows["n_graphs"].tolist() == [1, 3, 7, 256]
    # gpu_b: its capture study ran out of memory, its bs=64 graph cell too: no rows from them
    b = cap[cap["gpu"] == "gpu_b"]
    assert "study" not in set(b["series"]) and 64 not in set(b["batch_size"].dropna())


def test_the_converter_shape_is_not_read(tmp_path):
    cell = Cell("gpu_a", "graph_pool", "startup", "cudagraph")
    old = {"per_size": [{"size": 1, "capture_s": 0.1, "graph_memory_mb": 2.0}],
           "capture_size_study": [{"capture_sizes": [1], "capture_s_total": 0.1, "graph_memory_mb": 2.0}]}  # fmt: skip
    write(tmp_path, cell, "ok", {"startup_s": 1.0}, details=old)
    assert agg.parse_capture_details(agg.read_results(tmp_path, [cell.path])).empty


@pytest.mark.parametrize(
    "details, where",
    [
        ({"capture": {**capture_summary(), "per_size": [{"size": 1, "warmup_s": 0.1, "capture_s": "slow"}]}}, "'slow'"),
        ({"capture": {**capture_summary(), "per_size": [{**per_size(4), "memory_mb": None}]}}, "memory_mb"),
        ({"capture": {**capture_summary(), "memory_mb_total": float("nan")}}, "memory_mb_total"),
        ({"capture": {**capture_summary(), "per_size": [{**per_size(4), "size": 0}]}}, "per_size/0/size"),
    ],
)
def test_malformed_capture_detail_is_named(tmp_path, details, where):
    cell = Cell("gpu_a", "graph_pool", "startup", "cudagraph")
    write(tmp_path, cell, "ok", {"startup_s": 1.0}, details=details)
    records = agg.read_results(tmp_path, [cell.path])
    with pytest.raises(agg.AggregationError, match=r"startup/cudagraph/single\.json") as e:
        agg.parse_capture_details(records)
    assert where in str(e.value)


def test_malformed_capture_study_is_named(tmp_path):
    cell = Cell("gpu_a", "graph_pool", "capture_study", "cudagraph")
    rows = capture_study_details()
    rows[2]["n_graphs"] = "seven"
    write(tmp_path, cell, "ok", {"capture_sets": 4.0}, details={"capture_study": rows})
    with pytest.raises(agg.AggregationError, match=r"capture_study/cudagraph/single\.json.*capture_study/2/n_graphs"):
        agg.parse_capture_details(agg.read_results(tmp_path, [cell.path]))


def test_records_that_changed_since_the_summary_are_refused(study):
    records, df = agg.aggregate(study)
    agg.check_records_match(records, df, "summary.csv")
    changed = dict(records[0], sha256="0" * 64)
    with pytest.raises(agg.AggregationError, match="changed since summary.csv"):
        agg.check_records_match([changed], df, "summary.csv")


def test_value_or_gap_labels():
    assert agg.value_or_gap(None, "x") == "missing"
    assert agg.value_or_gap({"status": "oom"}, "x") == "OOM"
    assert agg.value_or_gap({"status": "ok", "x": float("nan")}, "x") == "n/a"
    assert agg.value_or_gap({"status": "ok", "x": 2.0}, "x") == 2.0


def test_benchmark_script_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "aggregate_bench.py"), "--files", "300"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "aggregated 300 result files in" in out.stdout


def test_pool_vs_floor_names_each_backends_run_before_its_table(tmp_path):
    """The issue-10 table from a summary whose backends ran at two commits: each backend's line
    names its commit and finish times, a cross-run pool/torch_compile ratio is called one, and
    the table comes last."""
    base = {"gpu": "h200", "workload": "latency", "mode": "cudagraph", "status": "ok", "batch_size": 16}
    rows = [
        dict(base, backend="graph_pool", decode_step_ms_median=4.6, hbm_floor_ms=3.7, e2e_latency_s_mean=0.39,
             git_commit="ec9fe13e5", finished_utc="2026-12-01T18:01:40+00:00"),
        dict(base, backend="torch_compile", decode_step_ms_median=5.5, hbm_floor_ms=3.7, e2e_latency_s_mean=0.46,
             git_commit="fde217ac9", finished_utc="2026-12-01T17:41:10+00:00"),
    ]  # fmt: skip

    def run(rows):
        pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
        return subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "pool_vs_floor.py"), "--summary", str(tmp_path / "summary.csv")],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.splitlines()  # fmt: skip

    out = run(rows)
    assert out[0] == "graph_pool: commit ec9fe13, finished 2026-12-01T18:01 .. 2026-12-01T18:01 UTC"
    assert out[1] == "torch_compile: commit fde217a, finished 2026-12-01T17:41 .. 2026-12-01T17:41 UTC"
    assert out[2] == "pool/torch_compile compares cells of different runs: measure both in one run for that ratio"
    assert out[3].startswith("bs | pool graph ms | floor ms | pool/floor")
    assert out[-1] == "16 | 4.6 | 3.7 | 1.24 | 5.5 | 0.836 | - | 0.39"
    # both backends from one run: no warning, the table follows their lines
    out = run([rows[0], dict(rows[1], git_commit="ec9fe13e5")])
    assert out[1].startswith("torch_compile: commit ec9fe13") and out[2].startswith("bs | pool graph ms")


def test_a_step_marker_counted_as_a_kernel_is_taken_out(tmp_path):
    """Files written before the fix counted the profiler's step marker (its device-side
    annotation, as long as the whole profiled call) as one kernel."""
    kernels = {"kernels": 1256, "kernel_ms": 70.5, "by_name": {"cgb_step": 1, "k": 1255},
               "ms_by_name": {"cgb_step": 64.1, "k": 6.4}}  # fmt: skip
    m = {"kernels_per_step": 1256.0, "gpu_kernel_ms_per_step": 70.5, "launch_us_per_kernel": 10.0}
    write(tmp_path, CELL, "ok", m, details={"kernels": kernels})
    row = agg.aggregate(tmp_path)[1].iloc[0]
    assert row["kernels_per_step"] == 1255 and row["gpu_kernel_ms_per_step"] == pytest.approx(6.4)
    assert row["launch_us_per_kernel"] == pytest.approx(10.0 * 1256 / 1255)
    fixed = dict(kernels, kernels=1255, by_name={"k": 1255})
    write(tmp_path / "new", CELL, "ok", dict(m, kernels_per_step=1255.0), details={"kernels": fixed})
    assert agg.aggregate(tmp_path / "new")[1].iloc[0]["kernels_per_step"] == 1255  # nothing to correct
