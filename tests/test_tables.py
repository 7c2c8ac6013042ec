"""Tables: rounding rule, gaps as labels, the launch-overhead model, the three formats. Synthetic numbers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from cudagraph_bench import aggregate as agg
from cudagraph_bench import tables as T
from cudagraph_bench.cells import Cell
from helpers_results import graph_pool_latency, synthetic_study, write


@pytest.fixture(scope="module")
def df(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    synthetic_study(root)
    return agg.aggregate(root)[1]


def rows_of(table: T.Table) -> list[dict]:
    return [dict(zip(table.columns, r, strict=True)) for r in table.rows]


@pytest.mark.parametrize(
    "x, text",
    [
        (0.8071, "0.807"),
        (12.61, "12.6"),
        (706.77, "707"),
        (12345.6, "12346"),
        (99.96, "100"),
        (9.996, "10.0"),
        (0.000123456, "0.000123"),
        (-4.567, "-4.57"),
        (0, "0"),
        (1.0, "1.00"),
        (float("inf"), "inf"),
        (float("nan"), "n/a"),
        ("OOM", "OOM"),
    ],
)
def test_one_rounding_rule(x, text):
    assert T.fmt(x) == text


def test_headline_shape_and_gaps(df):
    table = T.headline_table(df)
    assert table.columns[:8] == (
        "GPU", "Model", "Backend", "Source", "Mode", "Tokens in / out", "bs=1 latency (s)", "tok/s (bs=1)",
    )  # fmt: skip
    assert "Serving throughput rr=6 (tok/s)" in table.columns
    assert "Serving throughput rr=inf (tok/s)" in table.columns
    rows = rows_of(table)
    gp = [r for r in rows if r["Backend"] == "graph_pool"]
    assert {r["Tokens in / out"] for r in gp} == {"256 / 64"}  # workload latency, never latency_long (512/128)
    assert all(r["Serving throughput rr=6 (tok/s)"] == "n/a" for r in gp)  # no server in the graph pool
    unsupported = [r for r in rows if r["GPU"] == "gpu_b" and r["Backend"] == "vllm"]
    assert unsupported and all(r["bs=1 latency (s)"] == "unsupported" for r in unsupported)
    eager = next(r for r in rows if (r["GPU"], r["Backend"], r["Mode"]) == ("gpu_a", "graph_pool", "Eager"))
    step = max(8.0, 4.0 * (1 + 1 / 64))  # synthetic: eager step = max(cpu 8 ms, gpu 4 ms x (1 + bs/64))
    assert eager["bs=1 latency (s)"] == T.fmt(step * 64 / 1000 + 0.01)
    assert eager["tok/s (bs=1)"] == T.fmt(64 / (step * 64 / 1000 + 0.01))


def test_every_row_names_its_model_and_source(df):
    for table in (T.headline_table(df), T.metrics_table(df), T.model_table(df)):
        assert table.columns[:4] == ("GPU", "Model", "Backend", "Source"), table.name
        for row in rows_of(table):
            want = {"gpu_a": ("synthetic-8b", "pipeline"), "gpu_b": ("synthetic-1b", "imported (older drivers)")}
            assert (row["Model"], row["Source"]) == want[row["GPU"]], (table.name, row)
        assert any("imported (older drivers)" in n and "details.imported_from" in n for n in table.notes)


def test_the_headline_gpu_comes_first(tmp_path):
    for gpu in ("a100", "h200", "h100"):
        for mode in ("eager", "cudagraph"):
            write(tmp_path, Cell(gpu, "graph_pool", "latency", mode, 1), "ok", {"e2e_latency_s_mean": 0.5})
    df = agg.aggregate(tmp_path)[1]
    table = T.headline_table(df)
    assert [r["GPU"] for r in rows_of(table)] == ["h200", "h200", "a100", "a100", "h100", "h100"]
    assert table.notes[0].startswith("Headline GPU: h200")
    assert T.headline_table(df[df["gpu"] != "h200"]).notes[0].startswith("No h200 results yet")


def test_headline_is_the_latency_workload_at_bs1(tmp_path):
    # the published study: 0.37 s = 64 tokens at 171.6 tok/s (synthetic copies of those two numbers)
    for mode, s, tps in (("eager", 1.1, 58.0), ("cudagraph", 0.373, 171.6)):
        write(
            tmp_path,
            Cell("h200", "vllm", "latency", mode, 1),
            "ok",
            {"e2e_latency_s_mean": s, "output_tokens_per_s": tps},
        )
        write(tmp_path, Cell("h200", "vllm", "latency_long", mode, 1), "ok", {"e2e_latency_s_mean": 9.0})
    rows = rows_of(T.headline_table(agg.aggregate(tmp_path)[1]))
    graph = next(r for r in rows if r["Mode"] == "CUDA graph")
    assert (graph["Tokens in / out"], graph["bs=1 latency (s)"], graph["tok/s (bs=1)"]) == ("256 / 64", "0.373", "172")


def test_gaps_are_labels_never_zeros(df):
    for table in (T.headline_table(df), T.metrics_table(df), T.model_table(df)):
        for row in rows_of(table):
            for col, v in row.items():
                if v == "0":
                    # only a genuine zero may print as 0: graph memory of eager mode, or a zero error
                    assert col in ("Eager", "Error (%)"), (table.name, row)
    labels = {v for t in (T.headline_table(df), T.metrics_table(df)) for r in t.rows for v in r}
    assert {"unsupported", "OOM", "error", "missing", "n/a", "—"} <= labels


def test_metrics_table_reports_the_check_and_the_capture_study(df):
    rows = rows_of(T.metrics_table(df))
    a = {r["Metric"]: r for r in rows if r["GPU"] == "gpu_a"}
    assert a["Graph vs eager, check: checks failed"]["CUDA graph"] == "0 of 20"
    assert a["Graph vs eager, check: max relative error"]["CUDA graph"] == "0.00250"
    assert a["Capture study, capture_study: largest set's graph memory (MB)"]["CUDA graph"] != "n/a"
    b = {r["Metric"]: r for r in rows if r["GPU"] == "gpu_b"}
    assert b["Graph vs eager, check: checks failed"]["CUDA graph"] == "error"
    assert b["Capture study, capture_study: largest set's capture (s)"]["CUDA graph"] == "OOM"


def test_metrics_table_speedup_is_eager_over_graph(df):
    rows = rows_of(T.metrics_table(df))
    r = next(r for r in rows if r["GPU"] == "gpu_a" and r["Metric"] == "Decode step, latency bs=1 (ms)")
    median = lambda text: float(text.split(" (")[0])  # noqa: E731 - "median (p10–p90)"
    assert float(r["Graph speedup (×)"]) == pytest.approx(median(r["Eager"]) / median(r["CUDA graph"]), rel=1e-2)
    oom = next(r for r in rows if r["GPU"] == "gpu_b" and r["Metric"] == "Decode step, latency bs=64 (ms)")
    assert (oom["CUDA graph"], oom["Graph speedup (×)"]) == ("OOM", "—")
    srv = next(r for r in rows if r["Metric"] == "Serving throughput rr=inf (tok/s)")
    assert float(srv["Graph speedup (×)"]) == pytest.approx(1.1)  # throughput: graph / eager
    vllm = next(r for r in rows if r["GPU"] == "gpu_a" and r["Backend"] == "vllm" and "bs=4" in r["Metric"])
    assert vllm["Metric"].startswith("Time per output token")


def test_predict_eager_is_max_of_cpu_and_gpu():
    assert T.predict_eager_ms(8.0, 4.0) == 8.0
    assert T.predict_eager_ms(2.0, 6.0) == 6.0


def test_model_table_flags_where_the_model_does_not_hold(df):
    model = T.launch_model(df)
    lat = model[model["workload"] == "latency"]
    bad = lat[lat["holds"] == False]  # noqa: E712 (object column: True / False / None)
    assert bad[["gpu", "batch_size"]].values.tolist() == [["gpu_a", 16]]
    assert bad["error"].iloc[0] == pytest.approx(1 / 1.3 - 1)
    good = lat[lat["holds"] == True]  # noqa: E712
    assert (good["error"].abs() <= T.MODEL_TOLERANCE).all() and len(good) == 6
    assert set(good["regime"]) == {"launch-bound", "GPU-bound"}
    assert set(lat["us_per_kernel"].dropna().round(6)) == {80.0, 20.0}  # synthetic: 8 ms or 2 ms / 100 kernels
    rows = rows_of(T.model_table(df))
    flagged = [r for r in rows if r["Launch model"].startswith("DOES NOT HOLD")]
    assert len(flagged) == 1 and flagged[0]["Error (%)"] == T.fmt((1 / 1.3 - 1) * 100)
    oom = next(r for r in rows if r["GPU"] == "gpu_b" and r["Batch size"] == "64" and r["Workload"] == "latency")
    assert oom["Graph GPU time (ms)"] == "OOM" and oom["Eager predicted (ms)"] == "—"
    assert not any(r["Backend"] == "vllm" for r in rows)  # vLLM reports no kernels / enqueue time


def test_model_prediction_matches_synthetic_physics(tmp_path):
    # A cell whose eager step is exactly max(cpu, gpu): error 0, predicted speedup = measured.
    for mode in ("eager", "cudagraph"):
        m = graph_pool_latency(1, mode, cpu_ms=10.0, gpu_ms=5.0)
        write(tmp_path, Cell("g", "graph_pool", "latency", mode, 1), "ok", m)
    model = T.launch_model(agg.aggregate(tmp_path)[1])
    (row,) = model.to_dict("records")
    assert row["eager_pred_ms"] == 10.0 and row["speedup_pred"] == pytest.approx(2.0)
    assert row["speedup"] == pytest.approx(2.0) and row["error"] == pytest.approx(0.0) and row["holds"]


def test_formats(df, tmp_path):
    table = T.metrics_table(df)
    parsed = list(csv.reader(io.StringIO(T.to_csv(table))))
    assert tuple(parsed[0]) == table.columns and len(parsed) == len(table.rows) + 1
    md = T.to_markdown(table).splitlines()
    assert md[0].count("|") == md[1].count("|") == md[2].count("|") == len(table.columns) + 1
    tex = T.to_latex(table)
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "graph\\_pool" in tex and "graph_pool" not in tex.replace("graph\\_pool", "")
    assert "($\\times$)" in tex


def test_write_tables_writes_exactly_its_outputs_with_sidecars(df, tmp_path):
    written = T.write_tables(df, tmp_path / "tables", code_commit="abc")
    assert [p.as_posix() for p in written] == T.table_outputs((tmp_path / "tables").as_posix())
    side = json.loads((tmp_path / "tables" / "headline.json").read_text())
    paths = [f["path"] for f in side["result_files"]]
    assert paths == sorted(paths) and side["code_commit"] == "abc"
    assert side["config_hashes"] == ["c0ffee0000000000"]
    assert all(len(f["sha256"]) == 64 for f in side["result_files"])


def test_tables_of_an_empty_study():
    empty = agg.parse_results([])
    for build in T.TABLE_BUILDERS.values():
        assert build(empty).rows == ()


def test_decode_steps_show_their_spread_and_flag_a_noisy_cell(df):
    df = df.copy()
    sel = (df["gpu"] == "gpu_a") & (df["workload"] == "latency") & (df["batch_size"] == 1) & (df["mode"] == "eager")
    df.loc[sel, ["decode_step_ms_p10", "decode_step_ms_p90", "decode_step_cv_over_limit"]] = [7.0, 9.5, 1.0]
    r = next(
        r
        for r in rows_of(T.metrics_table(df))
        if r["GPU"] == "gpu_a" and r["Metric"] == "Decode step, latency bs=1 (ms)"
    )
    assert r["Eager"].endswith("(7.00–9.50) †")
    assert "†" not in r["CUDA graph"]
