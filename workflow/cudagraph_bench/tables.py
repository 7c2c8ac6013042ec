"""Tables from the tidy table: the published shape, the metrics table, the launch-overhead model.

Each table is built by a pure function (DataFrame -> Table) and written as CSV,
Markdown and LaTeX (booktabs, written by hand: no jinja2 needed) plus a
provenance sidecar JSON. Units are in the headers (or, where rows mix units, in
the row's label).

One rounding rule everywhere (`fmt`): three significant figures, except that
digits left of the decimal point are never dropped (0.8071 -> 0.807,
12.61 -> 12.6, 706.77 -> 707, 12345.6 -> 12346); ties follow Python's float
formatting. A cell without a number shows its gap label (missing,
unsupported, OOM, error, n/a), never a zero; a value derived from a gap shows "—".

Every row names the model its cells measured and where the numbers come from
(Source: "pipeline", or "imported (older drivers)" for files converted from the
device drivers that preceded the pipeline). GPUs are listed with the headline
GPU (HEADLINE_GPU, the published study's) first.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .aggregate import (
    IMPORTED_LABEL,
    MISSING,
    NOT_APPLICABLE,
    Lookup,
    group_rows,
    models_of,
    sidecar,
    source_of,
    write_atomic,
)
from .cells import BACKEND_KINDS
from .outputs import TABLE_FORMATS, TABLE_NAMES, table_outputs  # noqa: F401 - table_outputs re-exported

SIG = 3  # significant figures of every number in every table
DERIVED_GAP = "—"  # a ratio or prediction whose input is a gap
MODE_ORDER = ("eager", "cudagraph", "compile_nograph")
MODE_LABELS = {"eager": "Eager", "cudagraph": "CUDA graph", "compile_nograph": "Compile, no graph"}
# The published study's table: the H200, bs=1 latency of workload `latency` (256 prompt + 64
# output tokens; 0.37 s = 64 tokens at 171.6 tok/s), eager vs graphs.
HEADLINE_GPU = "h200"
HEADLINE_WORKLOAD = "latency"
# The model holds where |predicted - measured| / measured is at most this.
MODEL_TOLERANCE = 0.10


def fmt(x: float | str | None) -> str:
    """Format one number by the tables' rounding rule (see the module docstring); strings pass through."""
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NOT_APPLICABLE
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (SIG - 1):
        return f"{x:.0f}"
    r = float(f"{x:.{SIG}g}")  # round to SIG significant figures first: 99.96 -> 100
    if abs(r) >= 10 ** (SIG - 1):
        return f"{r:.0f}"
    return f"{r:.{SIG - 1 - math.floor(math.log10(abs(r)))}f}"


def mode_sort_key(mode: str) -> tuple:
    return (MODE_ORDER.index(mode), mode) if mode in MODE_ORDER else (len(MODE_ORDER), mode)


@dataclass(frozen=True)
class Table:
    """A formatted table: every cell already a string."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-align these columns
    notes: tuple[str, ...] = ()
    sources: frozenset[str] = field(default_factory=frozenset)  # result files drawn from


# --------------------------------------------------------------------------- shared selections


def workloads_of_kind(df: pd.DataFrame, kind: str) -> list[str]:
    return sorted(df.loc[df["kind"] == kind, "workload"].unique())


def gpu_sort_key(gpu: str) -> tuple:
    """The headline GPU first, then the others by name."""
    return (gpu != HEADLINE_GPU, gpu)


def gpu_backends(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(df["gpu"], df["backend"], strict=True)), key=lambda g: (gpu_sort_key(g[0]), g[1]))


def row_origin(lookup: Lookup, df: pd.DataFrame, gpu: str, backend: str) -> tuple[str, str]:
    """(Model, Source) of one output row: from the cells it consulted, else from its GPU and backend's cells."""
    rows = lookup.consulted() or group_rows(df, gpu, backend)
    return models_of(rows) or MISSING, source_of(rows) or MISSING


def tokens_in_out(row: dict | None) -> str:
    """ "256 / 64": the prompt and output tokens a latency cell recorded in its spec."""
    if row is None or pd.isna(row.get("input_len")) or pd.isna(row.get("output_len")):
        return DERIVED_GAP
    return f"{row['input_len']:.0f} / {row['output_len']:.0f}"


def modes_of(df: pd.DataFrame, gpu: str, backend: str) -> list[str]:
    sel = df[(df["gpu"] == gpu) & (df["backend"] == backend)]
    return sorted(sel["mode"].unique(), key=mode_sort_key)


def decode_metric(df: pd.DataFrame, backend: str) -> str:
    """The per-token decode time a backend reports: the pure decode step where measured
    (graph pool), else time per output token (vLLM's latency benchmark, prefill included)."""
    sel = df[df["backend"] == backend]
    has_step = "decode_step_ms_median" in sel and sel["decode_step_ms_median"].notna().any()
    return "decode_step_ms_median" if has_step else "ms_per_output_token"


def sweep_workload(df: pd.DataFrame) -> str | None:
    """The batch-size sweep: the latency workload with the most batch sizes (ties: by name)."""
    lat = df[df["kind"] == "latency"]
    if lat.empty:
        return None
    counts = lat.groupby("workload")["batch_size"].nunique()
    return sorted(counts.index, key=lambda w: (-counts[w], w))[0]


DECODE_LABELS = {"decode_step_ms_median": "Decode step", "ms_per_output_token": "Time per output token"}


def serving_label(df: pd.DataFrame, workload: str) -> str:
    """'rr=6' / 'rr=inf' from the recorded request rate, else the workload's name."""
    rates = df.loc[df["workload"] == workload, "request_rate"].dropna().unique()
    return f"rr={float(rates[0]):g}" if len(rates) == 1 else workload


def gap_of(v) -> str | None:
    """The gap label stored in a pairs/model frame, or None (pandas may hold None as NaN)."""
    return v if isinstance(v, str) else None


def ratio(a: float | str, b: float | str) -> float | str:
    """a / b, or the derived-gap mark when either is not a number."""
    if isinstance(a, str) or isinstance(b, str) or b == 0:
        return DERIVED_GAP
    return a / b


# --------------------------------------------------------------------------- decode pairs and the model


PAIR_COLUMNS = [
    "gpu",
    "backend",
    "workload",
    "batch_size",
    "metric",
    "eager_ms",
    "graph_ms",
    "speedup",
    "eager_gap",
    "graph_gap",
]


def decode_pairs(df: pd.DataFrame, lookup: Lookup | None = None, workload: str | None = None) -> pd.DataFrame:
    """Eager vs graph decode time per (gpu, backend, latency workload, batch size); one workload if given.

    eager_ms / graph_ms are NaN where the cell has no number, and eager_gap /
    graph_gap then hold its label; speedup = eager / graph.
    """
    lookup = lookup or Lookup(df)
    lat = df[df["kind"] == "latency"]
    if workload is not None:
        lat = lat[lat["workload"] == workload]
    rows = []
    for (gpu, backend, wl, bs), _ in lat.groupby(["gpu", "backend", "workload", "batch_size"], sort=True):
        metric = decode_metric(df, backend)
        e = lookup.value((gpu, backend, wl, "eager", int(bs)), metric)
        g = lookup.value((gpu, backend, wl, "cudagraph", int(bs)), metric)
        rows.append(
            {
                "gpu": gpu,
                "backend": backend,
                "workload": wl,
                "batch_size": int(bs),
                "metric": metric,
                "eager_ms": math.nan if isinstance(e, str) else e,
                "graph_ms": math.nan if isinstance(g, str) else g,
                "speedup": math.nan if isinstance(ratio(e, g), str) else ratio(e, g),
                "eager_gap": e if isinstance(e, str) else None,
                "graph_gap": g if isinstance(g, str) else None,
            }
        )
    rows.sort(key=lambda r: (gpu_sort_key(r["gpu"]), r["backend"], r["workload"], r["batch_size"]))
    return pd.DataFrame.from_records(rows, columns=PAIR_COLUMNS)


MODEL_COLUMNS = PAIR_COLUMNS + [
    "kernels_per_step",
    "cpu_enqueue_ms",
    "us_per_kernel",
    "gpu_graph_ms",
    "serial_ms",
    "eager_pred_ms",
    "speedup_pred",
    "error",
    "holds",
    "regime",
]


def predict_eager_ms(cpu_enqueue_ms: float, gpu_ms: float) -> float:
    """The launch-overhead model: an eager decode step takes max(CPU enqueue, GPU work).

    Physics: in eager mode the host enqueues kernels asynchronously and the GPU
    runs each as soon as it is queued and its predecessor is done; the host
    waits only once per step (when it reads the sampled tokens). So the two
    pipelines overlap and the step ends when the slower one does: the CPU's
    enqueue time when launch-bound, the GPU's work when compute/memory-bound.
    The serial sum cpu + gpu would need a sync after every kernel, which decode
    does not do. GPU work is taken from the graph-mode step, which replays the
    same kernels back to back with no launch gaps.

    max() of the totals is a lower bound: where long kernels (GEMMs) let the CPU
    run ahead and short ones then starve the GPU, the step is
    sum_i max(launch_i, kernel_i) > max(sum launch, sum kernel), up to the serial
    sum. The model table reports that sum beside each prediction.
    """
    return max(cpu_enqueue_ms, gpu_ms)


def _backends_with_model_inputs(df: pd.DataFrame) -> set[str]:
    if "cpu_enqueue_ms_per_step" not in df:
        return set()
    return set(df.loc[df["cpu_enqueue_ms_per_step"].notna(), "backend"])


def launch_model(df: pd.DataFrame, lookup: Lookup | None = None, workload: str | None = None) -> pd.DataFrame:
    """Predicted vs measured eager step and speedup, per latency cell pair of every
    backend that reports kernels_per_step / cpu_enqueue_ms_per_step.

    error = (predicted - measured) / measured eager step (the same fraction as
    for the speedup, which shares the graph step as denominator); holds =
    |error| <= MODEL_TOLERANCE; NaN / None where an input is a gap.
    """
    lookup = lookup or Lookup(df)
    pairs = decode_pairs(df[df["backend"].isin(_backends_with_model_inputs(df))], lookup, workload)
    rows = []
    for p in pairs.to_dict("records"):
        e_key = (p["gpu"], p["backend"], p["workload"], "eager", p["batch_size"])
        g_key = (p["gpu"], p["backend"], p["workload"], "cudagraph", p["batch_size"])
        kernels = lookup.value(e_key, "kernels_per_step")
        cpu = lookup.value(e_key, "cpu_enqueue_ms_per_step")
        gpu = lookup.value(g_key, "gpu_ms_per_step")
        if gpu == NOT_APPLICABLE:
            gpu = lookup.value(g_key, "decode_step_ms_median")
        num = {k: (math.nan if isinstance(v, str) else v) for k, v in (("k", kernels), ("c", cpu), ("g", gpu))}
        pred = math.nan if math.isnan(num["c"]) or math.isnan(num["g"]) else predict_eager_ms(num["c"], num["g"])
        error = pred / p["eager_ms"] - 1 if p["eager_ms"] > 0 else math.nan
        rows.append(
            dict(
                p,
                kernels_per_step=num["k"],
                cpu_enqueue_ms=num["c"],
                us_per_kernel=num["c"] * 1000 / num["k"] if num["k"] > 0 else math.nan,
                gpu_graph_ms=num["g"],
                serial_ms=num["c"] + num["g"],
                eager_pred_ms=pred,
                speedup_pred=pred / p["graph_ms"] if p["graph_ms"] > 0 else math.nan,
                error=error,
                holds=None if math.isnan(error) else abs(error) <= MODEL_TOLERANCE,
                regime=None if math.isnan(pred) else ("launch-bound" if num["c"] >= num["g"] else "GPU-bound"),
            )
        )
    return pd.DataFrame.from_records(rows, columns=MODEL_COLUMNS)


# --------------------------------------------------------------------------- the three tables


IMPORTED_NOTE = (
    f"Source {IMPORTED_LABEL}: converted, numbers unchanged, from the runs of the device drivers that "
    "preceded the pipeline (results/graph_pool_bench/, results/vllm_h100/; see results/README.md); each "
    "result file names its origin in details.imported_from and records the settings it ran with in spec."
)


def _source_notes(rows) -> tuple[str, ...]:
    return (IMPORTED_NOTE,) if any(IMPORTED_LABEL in r for r in rows) else ()


def headline_table(df: pd.DataFrame) -> Table:
    """The published table's shape, one block per GPU (HEADLINE_GPU first) and backend:
    Mode | bs=1 latency (s) | tok/s (bs=1) | serving throughput (tok/s), one column per serving workload.
    bs=1 is workload HEADLINE_WORKLOAD at batch size 1; each row names its model, source and the
    token counts its latency cell recorded."""
    lookup = Lookup(df)
    serving = workloads_of_kind(df, "serving")
    columns = ["GPU", "Model", "Backend", "Source", "Mode", "Tokens in / out", "bs=1 latency (s)", "tok/s (bs=1)"]
    columns += [f"Serving throughput {serving_label(df, w)} (tok/s)" for w in serving]
    rows = []
    for gpu, backend in gpu_backends(df):
        for mode in modes_of(df, gpu, backend):
            lookup.begin()
            lat = lookup.row((gpu, backend, HEADLINE_WORKLOAD, mode, 1))
            values = [tokens_in_out(lat)]
            values += [fmt(lookup.value((gpu, backend, HEADLINE_WORKLOAD, mode, 1), m))
                       for m in ("e2e_latency_s_mean", "output_tokens_per_s")]  # fmt: skip
            for w in serving:
                if "serving" not in BACKEND_KINDS.get(backend, ("serving",)):
                    values.append(NOT_APPLICABLE)  # e.g. the graph pool has no server
                else:
                    values.append(fmt(lookup.value((gpu, backend, w, mode, None), "serving_output_tok_per_s")))
            model, source = row_origin(lookup, df, gpu, backend)
            rows.append((gpu, model, backend, source, MODE_LABELS.get(mode, mode), *values))
    if (df["gpu"] == HEADLINE_GPU).any():
        first = f"Headline GPU: {HEADLINE_GPU} (the published table); other GPUs follow for comparison."
    else:
        first = f"No {HEADLINE_GPU} results yet (the published table is the {HEADLINE_GPU}'s): other GPUs only."
    notes = (
        first,
        f"bs=1 latency: mean end-to-end latency (prefill + decode) of one request of workload "
        f"{HEADLINE_WORKLOAD} at batch size 1; tok/s (bs=1): its output tokens per second. "
        "Tokens in / out: the prompt and output tokens that cell recorded.",
        "Serving throughput: output tokens/s of the serving benchmark.",
    )
    notes += _source_notes(rows)
    numeric = (False,) * 6 + (True,) * (len(columns) - 6)
    return Table("headline", tuple(columns), tuple(rows), numeric, notes, frozenset(lookup.used))


SPREAD_NOTE = (
    "Decode step: median (p10–p90) over the timed steps; † the steps' coefficient of variation stayed above 2% "
    "after the extra rounds an eager cell gets (host noise: read with care)."
)


def with_spread(lookup: Lookup, key: tuple, value) -> str:
    """A decode-step median as "median (p10–p90)", with † where the cell's CV stayed over the limit;
    the plain formatted value where the cell records no spread (older files, vLLM)."""
    text = fmt(value)
    if not isinstance(value, float):
        return text
    p10, p90 = lookup.value(key, "decode_step_ms_p10"), lookup.value(key, "decode_step_ms_p90")
    if isinstance(p10, float) and isinstance(p90, float):
        text += f" ({fmt(p10)}–{fmt(p90)})"
    if lookup.value(key, "decode_step_cv_over_limit") == 1.0:
        text += " †"
    return text


def metrics_table(df: pd.DataFrame) -> Table:
    """Per GPU and backend: decode latency eager / graph per batch size with the speedup,
    startup eager / graph, graph memory, serving throughput, the graph pool's correctness check
    and capture study."""
    lookup = Lookup(df)
    pairs = decode_pairs(df, lookup)
    columns = ("GPU", "Model", "Backend", "Source", "Metric", "Eager", "CUDA graph", "Graph speedup (×)")
    rows = []

    def add(gpu, backend, label, *values):
        model, source = row_origin(lookup, df, gpu, backend)
        rows.append((gpu, model, backend, source, label, *values))

    for gpu, backend in gpu_backends(df):
        sel = pairs[(pairs["gpu"] == gpu) & (pairs["backend"] == backend)]
        for p in sel.to_dict("records"):
            lookup.begin()
            for mode in ("eager", "cudagraph"):
                lookup.row((gpu, backend, p["workload"], mode, p["batch_size"]))
            e = gap_of(p["eager_gap"]) or p["eager_ms"]
            g = gap_of(p["graph_gap"]) or p["graph_ms"]
            label = f"{DECODE_LABELS[p['metric']]}, {p['workload']} bs={p['batch_size']} (ms)"
            key = (gpu, backend, p["workload"])
            cells = [
                with_spread(lookup, (*key, mode, p["batch_size"]), v) for mode, v in (("eager", e), ("cudagraph", g))
            ]
            add(gpu, backend, label, *cells, fmt(ratio(e, g)))
        for w in workloads_of_kind(df, "startup"):
            lookup.begin()
            e = lookup.value((gpu, backend, w, "eager", None), "startup_s")
            g = lookup.value((gpu, backend, w, "cudagraph", None), "startup_s")
            if e != MISSING or g != MISSING:
                add(gpu, backend, f"Startup, {w} (s)", fmt(e), fmt(g), fmt(ratio(e, g)))
                lookup.begin()
                e = lookup.value((gpu, backend, w, "eager", None), "graph_memory_mb")
                g = lookup.value((gpu, backend, w, "cudagraph", None), "graph_memory_mb")
                add(gpu, backend, f"Graph memory, {w} (MB)", fmt(e), fmt(g), NOT_APPLICABLE)
        for w in workloads_of_kind(df, "serving"):
            lookup.begin()
            e = lookup.value((gpu, backend, w, "eager", None), "serving_output_tok_per_s")
            g = lookup.value((gpu, backend, w, "cudagraph", None), "serving_output_tok_per_s")
            if e != MISSING or g != MISSING:
                label = f"Serving throughput {serving_label(df, w)} (tok/s)"
                add(gpu, backend, label, fmt(e), fmt(g), fmt(ratio(g, e)))
        for w in workloads_of_kind(df, "check"):
            lookup.begin()
            key = (gpu, backend, w, "cudagraph", None)
            if lookup.row(key) is None:
                continue
            failed, total = lookup.value(key, "checks_failed"), lookup.value(key, "checks_total")
            counts = [v if isinstance(v, str) else f"{v:.0f}" for v in (failed, total)]
            text = failed if isinstance(failed, str) else " of ".join(counts)
            add(gpu, backend, f"Graph vs eager, {w}: checks failed", NOT_APPLICABLE, text, NOT_APPLICABLE)
            add(gpu, backend, f"Graph vs eager, {w}: max relative error", NOT_APPLICABLE,
                fmt(lookup.value(key, "max_rel_err")), NOT_APPLICABLE)  # fmt: skip
        for w in workloads_of_kind(df, "capture_study"):
            lookup.begin()
            key = (gpu, backend, w, "cudagraph", None)
            if lookup.row(key) is None:
                continue
            for metric, label in (("graph_memory_mb_max", "graph memory (MB)"), ("capture_s_total_max", "capture (s)")):
                value = fmt(lookup.value(key, metric))
                add(gpu, backend, f"Capture study, {w}: largest set's {label}", NOT_APPLICABLE, value, NOT_APPLICABLE)
    notes = (
        "Graph speedup = eager / graph for times, graph / eager for throughput: above 1, graphs help.",
        "Decode step: the graph pool's median decode step; time per output token: vLLM's latency benchmark "
        "(prefill included).",
        SPREAD_NOTE,
    )
    notes += _source_notes(rows)
    numeric = (False,) * 5 + (True,) * 3
    return Table("metrics", columns, tuple(rows), numeric, notes, frozenset(lookup.used))


def model_table(df: pd.DataFrame) -> Table:
    """The launch-overhead model, predicted vs measured per cell, flagging |error| > MODEL_TOLERANCE."""
    lookup = Lookup(df)
    model = launch_model(df, lookup)
    columns = (
        "GPU",
        "Model",
        "Backend",
        "Source",
        "Workload",
        "Batch size",
        "Kernels / step",
        "CPU enqueue (ms)",
        "Launch (µs / kernel)",
        "Graph GPU time (ms)",
        "Eager predicted (ms)",
        "Eager measured (ms)",
        "Speedup predicted (×)",
        "Speedup measured (×)",
        "Error (%)",
        "Launch model",
    )
    rows = []
    for m in model.to_dict("records"):
        lookup.begin()
        for mode in ("eager", "cudagraph"):
            lookup.row((m["gpu"], m["backend"], m["workload"], mode, m["batch_size"]))
        llm, source = row_origin(lookup, df, m["gpu"], m["backend"])

        def side(v, gap):
            return gap_of(gap) or (NOT_APPLICABLE if math.isnan(v) else fmt(v))

        def derived(v):
            return DERIVED_GAP if math.isnan(v) else fmt(v)

        if m["holds"] is None or pd.isna(m["holds"]):
            verdict = DERIVED_GAP
        elif m["holds"]:
            verdict = f"holds ({m['regime']})"
        else:
            where = "above" if m["error"] < 0 else "below"
            verdict = f"DOES NOT HOLD: measured {where} max(cpu, gpu); serial cpu+gpu = {fmt(m['serial_ms'])} ms"
        rows.append(
            (
                m["gpu"],
                llm,
                m["backend"],
                source,
                m["workload"],
                str(m["batch_size"]),
                side(m["kernels_per_step"], m["eager_gap"]),
                side(m["cpu_enqueue_ms"], m["eager_gap"]),
                derived(m["us_per_kernel"]),
                side(m["gpu_graph_ms"], m["graph_gap"]),
                derived(m["eager_pred_ms"]),
                side(m["eager_ms"], m["eager_gap"]),
                derived(m["speedup_pred"]),
                derived(m["speedup"]),
                derived(m["error"] * 100),
                verdict,
            )
        )
    notes = (
        "Predicted eager step = max(CPU enqueue per step, graph-mode GPU time per step); predicted speedup = "
        "predicted eager / measured graph step.",
        "Error = (predicted - measured) / measured eager step; the model holds where the error is within "
        f"±{MODEL_TOLERANCE * 100:g}%.",
    )
    if model.empty:
        notes += ("No cell reports kernels_per_step and cpu_enqueue_ms_per_step.",)
    notes += _source_notes(rows)
    numeric = (False,) * 5 + (True,) * 10 + (False,)
    return Table("launch_model", columns, tuple(rows), numeric, notes, frozenset(lookup.used))


TABLE_BUILDERS = {"headline": headline_table, "metrics": metrics_table, "launch_model": model_table}


# --------------------------------------------------------------------------- writers


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.columns)
    w.writerows(table.rows)
    return buf.getvalue()


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(map(_md_cell, table.columns)) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in table.numeric) + "|")
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + list(table.notes)
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "×": r"$\times$",
    "µ": r"$\mu$",
    "—": "---",
    "±": r"$\pm$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s)


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    spec = "".join("r" if n else "l" for n in table.numeric)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join(latex_escape(c) for c in table.columns) + r" \\")
    lines.append("\\midrule")
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines.append("\\bottomrule")
    for note in table.notes:
        lines.append(f"\\multicolumn{{{len(table.columns)}}}{{l}}{{\\footnotesize {latex_escape(note)}}} \\\\")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


def write_table(
    table: Table, df: pd.DataFrame, out_dir: str | os.PathLike, code_commit: str | None = None
) -> list[Path]:
    """Write one table as .csv, .md, .tex and its provenance sidecar .json."""
    out = Path(out_dir)
    texts = {"csv": to_csv(table), "md": to_markdown(table), "tex": to_latex(table)}
    texts["json"] = sidecar(table.name, df, table.sources, code_commit, rounding=f"{SIG} significant figures")
    return [write_atomic(out / f"{table.name}.{ext}", texts[ext]) for ext in TABLE_FORMATS]


def write_tables(
    df: pd.DataFrame, out_dir: str | os.PathLike = "results/tables", code_commit: str | None = None
) -> list[Path]:
    """Build and write every table; returns the paths written (= table_outputs(out_dir))."""
    return [p for name in TABLE_NAMES for p in write_table(TABLE_BUILDERS[name](df), df, out_dir, code_commit)]
