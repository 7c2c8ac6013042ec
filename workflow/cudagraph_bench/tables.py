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

from . import queue_model as Q
from .aggregate import (
    IMPORTED_LABEL,
    MISSING,
    NOT_APPLICABLE,
    Lookup,
    group_rows,
    models_of,
    sidecar,
    source_of,
)
from .cells import BACKEND_KINDS, MODES
from .derived import (
    DERIVED_GAP,
    HEADLINE_GPU,
    LAUNCH_BOUND_IDLE,
    MODEL_TOLERANCE,
    NOT_A_QUEUE,
    decode_pairs,
    gap_of,
    gpu_sort_key,
    paths_of,
    ratio,
    sweep_workload,
    workloads_of_kind,
)
from .outputs import TABLE_FORMATS, TABLE_NAMES
from .results import write_atomic

SIG = 3  # significant figures of every number in every table
MODE_ORDER = MODES
MODE_LABELS = {
    "eager": "Eager",
    "cudagraph": "CUDA graph",
    "compile_nograph": "Compile, no graph",
    "piecewise": "Piecewise graphs",
    "full_decode_only": "Full graphs, decode only",
}
# The published study's table: the H200, bs=1 latency of workload `latency` (256 prompt + 64
# output tokens; 0.37 s = 64 tokens at 171.6 tok/s), eager vs graphs.
HEADLINE_WORKLOAD = "latency"


VLLM = "vllm"


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


DECODE_LABELS = {"decode_step_ms_median": "Decode step", "ms_per_output_token": "Time per output token"}


def serving_label(df: pd.DataFrame, workload: str) -> str:
    """'rr=6' / 'rr=inf' from the recorded request rate, else the workload's name."""
    rates = df.loc[df["workload"] == workload, "request_rate"].dropna().unique()
    return f"rr={float(rates[0]):g}" if len(rates) == 1 else workload


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


def model_table(df: pd.DataFrame, model: pd.DataFrame) -> Table:
    """The queue model (derived.launch_model of df), predicted vs measured per eager cell with a
    launch sequence, flagging |error| > MODEL_TOLERANCE."""
    lookup = Lookup(df)
    lookup.used |= paths_of(model)
    columns = (
        "GPU",
        "Model",
        "Backend",
        "Source",
        "Workload",
        "Batch size",
        "Kernels / step",
        "CPU per step (ms)",
        "CPU per kernel (µs)",
        "Bare launches (ms)",
        "CPU basis",
        "GPU kernel time (ms)",
        "GPU idle, predicted (ms)",
        "Eager predicted (ms)",
        "Eager measured (ms)",
        "Speedup predicted (×)",
        "Speedup measured (×)",
        "Error (%)",
        "Queue model",
    )
    rows = []
    for m in model.to_dict("records"):
        lookup.begin()
        e_key = (m["gpu"], m["backend"], m["workload"], "eager", m["batch_size"])
        for mode in ("eager", "cudagraph"):
            lookup.row((m["gpu"], m["backend"], m["workload"], mode, m["batch_size"]))
        llm, source = row_origin(lookup, df, m["gpu"], m["backend"])
        if m["regime"].startswith(NOT_A_QUEUE):
            verdict = m["regime"]
        elif m["holds"] is None or pd.isna(m["holds"]):
            verdict = DERIVED_GAP
        elif m["holds"]:
            verdict = f"holds ({m['regime']})"
        else:
            verdict = f"DOES NOT HOLD ({m['regime']}): measured {'above' if m['error'] < 0 else 'below'} the queue"
        rows.append(
            (
                m["gpu"],
                llm,
                m["backend"],
                source,
                m["workload"],
                str(m["batch_size"]),
                fmt(m["kernels_per_step"]),
                fmt(m["cpu_enqueue_ms"]),
                fmt(m["us_per_kernel"]),
                fmt(m["bare_launch_ms"]),
                m["basis"],
                fmt(m["gpu_kernel_ms"]),
                fmt(m["gpu_idle_ms"]),
                fmt(m["eager_pred_ms"]),
                with_spread(lookup, e_key, m["eager_ms"]),
                DERIVED_GAP if math.isnan(m["speedup_pred"]) else fmt(m["speedup_pred"]),
                gap_of(m["graph_gap"]) or fmt(m["speedup"]),
                fmt(m["error"] * 100),
                verdict,
            )
        )
    notes = (
        "Queue model: the host issues kernel i at issue_i = issue_(i-1) + c_i; the GPU starts it at "
        "max(issue_i, end of kernel i-1) and runs it for d_i; the predicted eager step ends with the last "
        "kernel. d_i: each kernel's GPU time in the eager cell's profiled step. c_i: the host's time to issue "
        "a step, shared by its kernels in proportion to the host's launch cost of each one's kind, measured "
        "in the same job. That host time is the median over the timed steps themselves where the cell "
        f"records it (CPU basis '{Q.BASIS_STEP_HOST}'), else the CPU enqueue time measured in a separate "
        f"loop with the GPU kept busy ('{Q.BASIS_ENQUEUE}'), else the bare launch costs alone "
        f"('{Q.BASIS_LAUNCH_ONLY}', a lower bound). Bare launches: the step's launch calls alone at the "
        "host's measured cost per kind (an ATen launch, a Triton launch); the rest of the host's time per "
        "step is the framework's own work between launches (Python, dispatch, allocation).",
        "Where a step is launch-bound its predicted time is close to the host's time per step by "
        "construction; the model's own content is the GPU's idle time, and it is tested where host and "
        "GPU time are close (GPU-bound cells).",
        "Predicted speedup = predicted eager / measured graph step. Error = (predicted - measured) / measured "
        f"eager step; the model holds where it is within ±{MODEL_TOLERANCE * 100:g}%. Launch-bound: the "
        f"predicted GPU idle time exceeds {LAUNCH_BOUND_IDLE * 100:g}% of the step. The measured eager step "
        "shows its median (p10–p90); † marks a cell whose steps varied by more than the CV limit.",
    )
    if (model["backend"] == VLLM).any():
        notes += (
            "vLLM rows: d_i and the kinds are one decode step of vLLM's own torch-profiler trace (the eager "
            "cell's second, profiled run: `vllm bench latency --profile`). vLLM reports no host time per step "
            f"outside its profiler, so c_i are the bare launch costs ('{Q.BASIS_LAUNCH_ONLY}': a lower bound), "
            "and the measured eager time is the benchmark's time per output token (its prefill shared out).",
        )
    else:
        notes += (
            "No vLLM row: vLLM's eager latency cells are modelled where they ran vLLM's profiler "
            "(vllm.profile_batch_sizes) and recorded the host's launch costs.",
        )
    if model.empty:
        notes += ("No eager latency cell with a launch sequence and host launch costs.",)
    notes += _source_notes(rows)
    numeric = (False,) * 6 + (True,) * 4 + (False,) + (True,) * 7 + (False,)
    return Table("launch_model", columns, tuple(rows), numeric, notes, frozenset(lookup.used))


def kinds_table(df: pd.DataFrame, model: pd.DataFrame) -> Table:
    """The queue model (derived.launch_model of df) per kernel kind of every modelled cell:
    kernels, host and GPU time, GPU idle."""
    lookup = Lookup(df)
    lookup.used |= paths_of(model)
    columns = ("GPU", "Backend", "Workload", "Batch size", "Launched through", "Kernels", "CPU (ms)",
               "GPU (ms)", "GPU idle before them (ms)")  # fmt: skip
    rows = []
    for m in model.to_dict("records"):
        lookup.row((m["gpu"], m["backend"], m["workload"], "eager", m["batch_size"]))
        for kind, k in m["by_kind"].items():
            rows.append(
                (
                    m["gpu"],
                    m["backend"],
                    m["workload"],
                    str(m["batch_size"]),
                    Q.KIND_LABELS[kind],
                    str(k["kernels"]),
                    fmt(k["cpu_ms"]),
                    fmt(k["gpu_ms"]),
                    fmt(k["idle_ms"]),
                )
            )
    notes = (
        "Per kind of launch, from the queue model of table launch_model: CPU = the host time the model gives "
        "those launches, GPU = their kernels' time, idle = the GPU's wait for the host just before them.",
    )
    numeric = (False,) * 5 + (True,) * 4
    return Table("launch_kinds", columns, tuple(rows), numeric, notes, frozenset(lookup.used))


def vllm_modes_table(df: pd.DataFrame) -> Table:
    """vLLM's modes side by side, per GPU: the CUDA-graph mode each ran, bs-sweep latency, start-up,
    graph capture time and memory, serving throughput."""
    lookup = Lookup(df)
    sweep = sweep_workload(df[df["backend"] == VLLM]) if (df["backend"] == VLLM).any() else None
    sizes = (
        sorted(
            int(b) for b in df.loc[(df["backend"] == VLLM) & (df["workload"] == sweep), "batch_size"].dropna().unique()
        )
        if sweep
        else []
    )
    startups = workloads_of_kind(df[df["backend"] == VLLM], "startup")
    serving = workloads_of_kind(df[df["backend"] == VLLM], "serving")
    columns = ["GPU", "Model", "Source", "Mode", "Graph mode vLLM ran"]
    columns += [f"Latency bs={b} (s)" for b in sizes]
    columns += ["Start-up (s)", "Start-up, warm (s)", "Graph capture (s)", "Graph memory (MB)"]
    columns += [f"Serving {serving_label(df, w)} (tok/s)" for w in serving]
    rows = []
    for gpu, backend in gpu_backends(df):
        if backend != VLLM:
            continue
        for mode in modes_of(df, gpu, backend):
            lookup.begin()
            keys = [(gpu, backend, sweep, mode, b) for b in sizes]
            keys += [(gpu, backend, w, mode, None) for w in (*startups, *serving)]
            ran = sorted(
                {r["graph_mode_ran"] for k in keys if (r := lookup.row(k)) and isinstance(r.get("graph_mode_ran"), str)}
            )
            values = [", ".join(ran) or ("none" if mode in ("eager", "compile_nograph") else "not recorded")]
            values += [fmt(lookup.value((gpu, backend, sweep, mode, b), "e2e_latency_s_mean")) for b in sizes]
            st = (gpu, backend, startups[0], mode, None) if startups else None
            for metric in ("startup_s", "startup_warm_s", "capture_s", "graph_memory_mb"):
                v = lookup.value(st, metric) if st else MISSING
                # vLLM's log gives the capture time in whole seconds: no decimals it does not have
                values.append(f"{v:g}" if metric == "capture_s" and not isinstance(v, str) else fmt(v))
            values += [fmt(lookup.value((gpu, backend, w, mode, None), "serving_output_tok_per_s")) for w in serving]
            model, source = row_origin(lookup, df, gpu, backend)
            rows.append((gpu, model, source, MODE_LABELS.get(mode, mode), *values))
    notes = (
        f"Latency: mean end-to-end latency of one batch of workload {sweep or '(none)'} (vllm bench latency). "
        f"Start-up, graph capture and memory: the {', '.join(startups) or 'start-up'} cell: a cold start "
        "(fresh compile caches) through vllm bench startup, or for cells measured before it was used, vllm "
        "serve to GET /health; warm: vllm bench startup's start from the cache a warm-up start wrote "
        "(n/a for vllm serve cells). Capture and memory are from the first, cold start's log (vLLM logs "
        "the capture time in whole seconds). Serving: "
        "output tokens/s of vllm bench serve.",
        "Graph mode vLLM ran: from the kinds of graph its log reports capturing (FULL, PIECEWISE), in the "
        "mode's latency, start-up and serving cells; "
        "'X (asked Y)' where vLLM downgraded the mode the cell asked for; 'not recorded' for cells measured "
        "before the pipeline recorded it. Eager = --enforce-eager (no compile, no graphs); compile, no graph "
        "= cudagraph_mode NONE; CUDA graph = vLLM's default, FULL_AND_PIECEWISE.",
    )
    notes += _source_notes(rows)
    numeric = (False,) * 5 + (True,) * (len(columns) - 5)
    return Table("vllm_modes", tuple(columns), tuple(rows), numeric, notes, frozenset(lookup.used))


TABLE_BUILDERS = {  # name -> (tidy table, launch model) -> Table
    "headline": lambda df, model: headline_table(df),
    "metrics": lambda df, model: metrics_table(df),
    "launch_model": model_table,
    "launch_kinds": kinds_table,
    "vllm_modes": lambda df, model: vllm_modes_table(df),
}


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


def write_table(table: Table, df: pd.DataFrame, out_dir: str | os.PathLike, code: tuple | None = None) -> list[Path]:
    """Write one table as .csv, .md, .tex and its provenance sidecar .json."""
    out = Path(out_dir)
    texts = {"csv": to_csv(table), "md": to_markdown(table), "tex": to_latex(table)}
    texts["json"] = sidecar(table.name, df, table.sources, code, rounding=f"{SIG} significant figures")
    return [write_atomic(out / f"{table.name}.{ext}", texts[ext]) for ext in TABLE_FORMATS]


def write_tables(
    df: pd.DataFrame, out_dir: str | os.PathLike, *, model: pd.DataFrame, code: tuple | None = None
) -> list[Path]:
    """Build and write every table from the tidy table and its launch model (derived.launch_model
    of df, computed once by the caller). Returns the paths written (= table_outputs(out_dir))."""
    return [p for name in TABLE_NAMES for p in write_table(TABLE_BUILDERS[name](df, model), df, out_dir, code)]
