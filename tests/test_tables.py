"""Tables: rounding rule, gaps as labels, the launch-overhead model, the three formats. Synthetic numbers."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from cudagraph_bench import aggregate as agg
from cudagraph_bench import derived as D
from cudagraph_bench import queue_model as Q
from cudagraph_bench import tables as T
from cudagraph_bench.cells import Cell
from cudagraph_bench.outputs import table_outputs
from helpers_results import graph_pool_latency, launches_detail, synthetic_study, vllm_profiled_latency, write


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    synthetic_study(root)
    return agg.aggregate(root)


@pytest.fixture(scope="module")
def df(study):
    return study[1]


@pytest.fixture(scope="module")
def launches(study):
    return agg.parse_launch_details(study[0])


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


def test_every_row_names_its_model_and_source(df, launches):
    for table in (T.headline_table(df), T.metrics_table(df), T.model_table(df, D.launch_model(df, launches))):
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
    for table in (T.headline_table(df), T.metrics_table(df), T.model_table(df, D.launch_model(df))):
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


def test_the_queue_waits_for_the_host_and_for_the_previous_kernel():
    # issue at 10, 20, 30 µs; the long kernel makes the third wait for the GPU, not the host
    end, idle = Q.simulate([10, 10, 10], [5, 30, 5])
    assert end == 55 and idle == [10, 5, 0]


def test_predict_shares_the_measured_enqueue_by_launch_kind():
    seq = pd.DataFrame({"kind": ["runtime", "driver"], "gpu_us": [1.0, 1.0]})
    q = Q.predict(seq, 0.08, aten_us=10.0, triton_us=30.0)  # c = 80 µs shared 1 : 3
    assert q["basis"] == Q.BASIS_ENQUEUE and q["pred_ms"] == pytest.approx(0.081)
    assert q["by_kind"]["runtime"]["cpu_ms"] == pytest.approx(0.02) and q["by_kind"]["driver"][
        "cpu_ms"
    ] == pytest.approx(0.06)
    assert q["idle_ms"] == pytest.approx(0.079)
    bare = Q.predict(seq, None, aten_us=10.0, triton_us=30.0)
    assert bare["basis"] == Q.BASIS_LAUNCH_ONLY and bare["pred_ms"] == pytest.approx(0.041)
    other = Q.predict(seq, 0.08, 10.0, 30.0, cpu_us_per_kernel=20.0, gpu_scale=50.0)  # c = 10, 30; d = 50, 50
    assert other["pred_ms"] == pytest.approx(0.110) and other["gpu_ms"] == pytest.approx(0.1)


def test_model_table_flags_where_the_model_does_not_hold(df, launches):
    model = D.launch_model(df, launches=launches)
    lat = model[model["workload"] == "latency"]
    # gpu_a: launch-bound (8 ms of host time against 4-8 ms of kernels); bs 16's eager step is 30%
    # slower than the queue allows; gpu_b: GPU-bound (2 ms of host time, 6 ms or more of kernels)
    bad = lat[lat["holds"] == False]  # noqa: E712 (object column: True / False / None)
    assert bad[["gpu", "batch_size"]].values.tolist() == [["gpu_a", 16]]
    g16 = 4.0 * (1 + 16 / 64)
    assert bad["eager_pred_ms"].iloc[0] == pytest.approx(8.0 + g16 / 100)  # all launches, then the last kernel
    assert bad["error"].iloc[0] == pytest.approx((8.0 + g16 / 100) / (8.0 * 1.3) - 1)
    good = lat[lat["holds"] == True]  # noqa: E712
    assert (good["error"].abs() <= D.MODEL_TOLERANCE).all() and len(good) == 7
    b1 = good[(good["gpu"] == "gpu_b") & (good["batch_size"] == 1)].iloc[0]
    assert b1["eager_pred_ms"] == pytest.approx(0.02 + 6.0 * (1 + 1 / 64))  # the first launch, then every kernel
    assert set(lat["regime"]) == {"launch-bound", "GPU-bound"} and set(lat["basis"]) == {Q.BASIS_ENQUEUE}
    rows = rows_of(T.model_table(df, D.launch_model(df, launches)))
    flagged = [r for r in rows if r["Queue model"].startswith("DOES NOT HOLD")]
    assert len(flagged) == 1 and flagged[0]["Error (%)"] == T.fmt(bad["error"].iloc[0] * 100)
    oom = next(r for r in rows if r["GPU"] == "gpu_b" and r["Batch size"] == "64" and r["Workload"] == "latency")
    assert oom["Speedup measured (×)"] == "OOM" and oom["Speedup predicted (×)"] == "—"
    assert not any(r["Backend"] == "vllm" for r in rows)  # vLLM records no launch sequence
    kinds = rows_of(T.kinds_table(df, D.launch_model(df, launches)))
    assert {r["Launched through"] for r in kinds} == {Q.KIND_LABELS["driver"]} and len(kinds) == len(rows)


def test_no_launch_sequence_no_model_row(df):
    assert D.launch_model(df).empty and T.model_table(df, D.launch_model(df)).rows == ()


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
    written = T.write_tables(df, tmp_path / "tables", model=D.launch_model(df), code=("abc", False))
    assert [p.as_posix() for p in written] == table_outputs((tmp_path / "tables").as_posix())
    side = json.loads((tmp_path / "tables" / "headline.json").read_text())
    paths = [f["path"] for f in side["result_files"]]
    assert paths == sorted(paths) and side["code_commit"] == "abc" and side["code_dirty"] is False
    assert side["config_hashes"] == ["c0ffee0000000000"]
    assert all(len(f["sha256"]) == 64 for f in side["result_files"])


def test_tables_of_an_empty_study():
    empty = agg.parse_results([])
    for build in T.TABLE_BUILDERS.values():
        assert build(empty, D.launch_model(empty)).rows == ()


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


def test_the_timed_steps_host_time_comes_before_the_separate_enqueue_loop(tmp_path):

    for mode in ("eager", "cudagraph"):
        m = graph_pool_latency(1, mode, cpu_ms=8.0, gpu_ms=4.0)
        if mode == "eager":
            m["step_host_ms_median"] = 3.0  # the separate loop's 8 ms was noise: the GPU bounds the step
        details = {"launches": launches_detail(100, 4.0)} if mode == "eager" else {}
        write(tmp_path, Cell("g", "graph_pool", "latency", mode, 1), "ok", m, details=details)
    records, df = agg.aggregate(tmp_path)
    (row,) = D.launch_model(df, launches=agg.parse_launch_details(records)).to_dict("records")
    assert row["basis"] == Q.BASIS_STEP_HOST and row["cpu_enqueue_ms"] == pytest.approx(3.0)
    assert row["eager_pred_ms"] == pytest.approx(0.03 + 4.0) and row["regime"] == "GPU-bound"


def test_vllm_modes_table_names_the_mode_vllm_ran(tmp_path):
    ran = {
        "cudagraph": {"asked": "FULL_AND_PIECEWISE", "ran": "FULL_AND_PIECEWISE", "downgraded": False},
        "full_decode_only": {"asked": "FULL_DECODE_ONLY", "ran": "PIECEWISE", "downgraded": True},
    }
    for mode, secs in (("eager", 1.2), ("cudagraph", 0.33), ("full_decode_only", 0.4)):
        for bs in (1, 4):
            details = {"graph_mode": ran[mode]} if mode in ran else {}
            m = {"e2e_latency_s_mean": secs * bs}
            write(tmp_path, Cell("h200", "vllm", "latency", mode, bs), "ok", m, details=details)
    df = agg.aggregate(tmp_path)[1]
    assert (
        df.loc[df["mode"] == "full_decode_only", "graph_mode_ran"].tolist()
        == ["PIECEWISE (asked FULL_DECODE_ONLY)"] * 2
    )
    rows = {r["Mode"]: r for r in rows_of(T.vllm_modes_table(df))}
    assert (
        rows["Eager"]["Graph mode vLLM ran"] == "none"
        and rows["CUDA graph"]["Graph mode vLLM ran"] == "FULL_AND_PIECEWISE"
    )
    assert rows["Full graphs, decode only"]["Graph mode vLLM ran"] == "PIECEWISE (asked FULL_DECODE_ONLY)"
    assert rows["Full graphs, decode only"]["Latency bs=4 (s)"] == T.fmt(1.6)
    assert rows["Eager"]["Start-up (s)"] == "missing"  # no startup cell written


def test_vllm_modes_table_reads_the_mode_ran_from_serving_cells_and_capture_in_whole_seconds(tmp_path):
    # latency and start-up cells from before the pipeline recorded the graph mode; a serving cell after
    for bs in (1, 4):
        write(tmp_path, Cell("h200", "vllm", "latency", "cudagraph", bs), "ok", {"e2e_latency_s_mean": 0.3})
    write(tmp_path, Cell("h200", "vllm", "startup", "cudagraph"), "ok", {"startup_s": 80.0, "capture_s": 5.0})
    ran = {"asked": "FULL_AND_PIECEWISE", "ran": "FULL_AND_PIECEWISE", "downgraded": False}
    write(
        tmp_path,
        Cell("h200", "vllm", "serving_inf", "cudagraph"),
        "ok",
        {"serving_output_tok_per_s": 2600.0},
        details={"graph_mode": ran},
    )
    (row,) = rows_of(T.vllm_modes_table(agg.aggregate(tmp_path)[1]))
    assert row["Graph mode vLLM ran"] == "FULL_AND_PIECEWISE"
    assert row["Graph capture (s)"] == "5" and row["Start-up (s)"] == T.fmt(80.0) == "80.0"


@pytest.mark.parametrize("seed", range(5))
def test_the_closed_form_end_is_the_queue_s(seed):
    import random

    rng = random.Random(seed)
    c = [rng.uniform(0, 50) for _ in range(200)]
    d = [rng.uniform(0, 80) for _ in range(200)]
    assert Q.step_end(c, d) == pytest.approx(Q.simulate(c, d)[0])


def test_a_step_that_waits_for_the_gpu_is_not_called_a_queue(tmp_path):
    for mode in ("eager", "cudagraph"):
        m = graph_pool_latency(1, mode, cpu_ms=8.0, gpu_ms=4.0)
        details = {}
        if mode == "eager":
            seq = launches_detail(100, 4.0) | {"host_waits": ["cudaStreamSynchronize"]}
            details = {"launches": seq}
        write(tmp_path, Cell("g", "graph_pool", "latency", mode, 1), "ok", m, details=details)
    records, df = agg.aggregate(tmp_path)
    launches = agg.parse_launch_details(records)
    (row,) = D.launch_model(df, launches=launches).to_dict("records")
    assert (
        row["holds"] is None
        and row["regime"] == "not a queue: it calls cudaStreamSynchronize (host calls that wait for the GPU)"
    )
    (table_row,) = rows_of(T.model_table(df, D.launch_model(df, launches)))
    assert table_row["Queue model"] == row["regime"]


def test_an_unmeasurable_enqueue_alone_does_not_make_a_step_wait_for_the_gpu(tmp_path):
    """torch_compile's eager step (1,256 launches) blocks an enqueue measured behind a busy GPU,
    though it makes no host call that waits: the model still scores it."""
    for mode in ("eager", "cudagraph"):
        m = graph_pool_latency(1, mode, cpu_ms=8.0, gpu_ms=4.0)
        details = {}
        if mode == "eager":
            m["step_host_ms_median"] = 8.0
            details = {"launches": launches_detail(100, 4.0), "cpu_enqueue": {"error": "not measurable"}}
        write(tmp_path, Cell("g", "torch_compile", "latency", mode, 1), "ok", m, details=details)
    records, df = agg.aggregate(tmp_path)
    (row,) = D.launch_model(df, launches=agg.parse_launch_details(records)).to_dict("records")
    assert row["regime"] == "launch-bound" and row["holds"] is True


def test_a_profiled_vllm_eager_cell_is_modelled_at_its_bare_launch_costs(tmp_path):
    """vLLM's eager cell with one decode step read from its profiler trace: the queue at the
    host's bare launch costs (vLLM reports no host time per step), against its time per token."""
    vllm_profiled_latency(tmp_path, graph_ms_per_token=5.0)
    records, df = agg.aggregate(tmp_path)
    model = D.launch_model(df, launches=agg.parse_launch_details(records))
    (row,) = model.to_dict("records")
    assert row["basis"] == Q.BASIS_LAUNCH_ONLY and row["kernels_per_step"] == 9
    assert row["bare_launch_ms"] == pytest.approx((5 * 7.0 + 3 * 11.0 + 7.0) / 1e3)  # memop at the ATen cost
    assert row["eager_ms"] == 20.0 and row["regime"].startswith("not a queue: it calls cudaStreamSynchronize")
    table = T.model_table(df, model)
    assert any("vLLM rows:" in n for n in table.notes) and rows_of(table)[0]["Backend"] == "vllm"
