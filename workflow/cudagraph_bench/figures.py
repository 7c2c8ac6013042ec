"""Figures from the tidy table: PDF + PNG with identical bytes on every rebuild.

Every figure is drawn by a function (data -> matplotlib Figure) under one style
(`STYLE`: DejaVu Sans as shipped with matplotlib, the Okabe-Ito colour-blind-safe
palette, units on every axis) and saved without dates, tool versions or
run-dependent ids in its metadata. A cell without a number is a labelled gap
("unsupported", "OOM", "error", "missing"), never a bar or point at zero. Every
group, series or panel label names the model its cells measured, and says
"imported" where the numbers were converted from an older device driver's run.
Each figure gets a sidecar JSON: code commit, the results' commits and config
hashes, and the result files it was drawn from.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly,
so no pyplot global state (or GUI backend) is involved.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from . import derived as D
from . import queue_model as Q
from . import tables as T
from .aggregate import (
    CAPTURE_COLUMNS,
    MISSING,
    Lookup,
    cell_key,
    group_rows,
    models_of,
    sidecar,
    sizes_label,
    value_or_gap,
)
from .backends.graph_pool.padding import padding_waste
from .cells import BACKEND_KINDS, BACKEND_MODES
from .outputs import FIGURE_FORMATS, FIGURE_NAMES
from .results import write_atomic

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
MODE_COLORS = {
    "eager": OKABE_ITO["vermillion"],
    "cudagraph": OKABE_ITO["blue"],
    "compile_nograph": OKABE_ITO["bluish_green"],
    "piecewise": OKABE_ITO["sky_blue"],
    "full_decode_only": OKABE_ITO["reddish_purple"],
}
SERIES_COLORS = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "reddish_purple", "orange", "sky_blue")]
# Figure 8 draws several modes whose lines can coincide (vLLM's graph modes at large batch):
# a marker per mode keeps each visible.
MODE_MARKERS = {"eager": "s", "cudagraph": "o", "compile_nograph": "D", "piecewise": "^", "full_decode_only": "v"}
BACKEND_MARKERS = {"graph_pool": "o", "vllm": "s", "torch_compile": "D"}
GAP_COLOR = "#666666"
STARTUP_PARTS = (  # (label, metrics in order of preference, colour)
    ("weight load", ("weight_init_s", "model_load_s"), OKABE_ITO["sky_blue"]),
    # vLLM's torch.compile; torch_compile's first three steps (its compilation, and in cudagraph mode
    # the graph recording); the graph pool's first step (Triton's JIT compilation of its kernels)
    ("compile / JIT", ("compile_s", "compile_and_first_steps_s", "first_step_s"), OKABE_ITO["orange"]),
    ("graph capture", ("capture_s_total", "capture_s"), OKABE_ITO["blue"]),
)
REST_COLOR = "#BBBBBB"

STYLE = {
    # Fixed fonts: DejaVu Sans ships inside matplotlib, so every machine renders the same glyphs.
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "pdf.fonttype": 42,  # embed TrueType (editable text in the PDF), not Type 3
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "svg.hashsalt": "cudagraph-bench",  # SVG ids are otherwise random per run
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.prop_cycle": cycler(color=SERIES_COLORS),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.facecolor": "white",
}
# No dates, no tool names: these would change the bytes from one rebuild to the next.
PDF_METADATA = {"CreationDate": None, "Creator": None, "Producer": None}
PNG_METADATA = {"Software": None}


def new_figure(width_in: float, height_in: float, ncols: int = 1, nrows: int = 1):
    """A Figure on an Agg canvas with constrained layout, and its axes (always a flat list)."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.flat)


def render(fig: Figure) -> dict[str, bytes]:
    """The figure as PDF and PNG bytes, with the style applied and run-dependent metadata removed."""
    out = {}
    with matplotlib.rc_context(STYLE):
        for fmt, meta in (("pdf", PDF_METADATA), ("png", PNG_METADATA)):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, metadata=meta)
            out[fmt] = buf.getvalue()
    return out


def gap_mark(ax, x: float, label: str, color: str = GAP_COLOR, *, horizontal: bool = False) -> None:
    """Label a gap where its bar or point would be (never draw it as zero)."""
    if horizontal:  # y in data coordinates, x in axes coordinates
        ax.text(0.01, x, label, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=6, color=color)
    else:
        ax.text(
            x,
            0.02,
            label,
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=6,
            color=color,
        )


def empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=GAP_COLOR)


def series_color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]


def origin(rows: list[dict]) -> str:
    """The model the rows measured, with ", imported" where their numbers were converted from an
    older device driver's run: "llama-3.1-8b", "llama-3.1-8b, imported"."""
    sources = {r["source"] for r in rows}
    tail = "" if "imported" not in sources else ", imported" if sources == {"imported"} else ", partly imported"
    return (models_of(rows) or MISSING) + tail


def group_origin(df: pd.DataFrame, gpu: str, backend: str | None = None) -> str:
    """origin() of every cell of a GPU (and backend)."""
    return origin(group_rows(df, gpu, backend))


def mode_legend(fig: Figure, modes: Sequence[str]) -> None:
    """The modes' colours, below the panels (never over a bar)."""
    handles = [Patch(color=MODE_COLORS.get(m, GAP_COLOR), label=T.MODE_LABELS.get(m, m)) for m in modes]
    fig.legend(handles=handles, loc="outside lower center", ncols=max(len(handles), 1))


def _grouped_bars(ax, groups: list[tuple], modes: list[str], value: Callable[[tuple, str], float | str]) -> None:
    """Bars per group (x; group[1] is the backend) and mode (colour); a gap gets its label in the bar's slot."""
    width = 0.8 / max(len(modes), 1)
    for gi, group in enumerate(groups):
        for mi, mode in enumerate(modes):
            if mode not in BACKEND_MODES.get(group[1], modes):
                continue  # e.g. the graph pool has no compile-only mode: not a gap, nothing to show
            x = gi - 0.4 + width * (mi + 0.5)
            v = value(group, mode)
            if isinstance(v, str):
                if v != T.NOT_APPLICABLE:
                    gap_mark(ax, x, v, MODE_COLORS.get(mode, GAP_COLOR))
                continue
            ax.bar(x, v, width, color=MODE_COLORS.get(mode, GAP_COLOR))
    ax.set_xticks(range(len(groups)), ["\n".join(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)


# --------------------------------------------------------------------------- figures


def fig1_latency_throughput(df: pd.DataFrame, lookup: Lookup) -> Figure:
    """bs=1 latency of the headline workload (left) and serving throughput (right), eager vs graph,
    grouped by GPU and backend; each group names its model."""
    all_modes = sorted(df["mode"].unique(), key=T.mode_sort_key)
    wl = T.HEADLINE_WORKLOAD
    lat_groups = T.gpu_backends(df[df["kind"] == "latency"])
    serving = D.workloads_of_kind(df, "serving")
    srv_groups = [
        (gpu, backend, w)
        for gpu, backend in T.gpu_backends(df)
        if "serving" in BACKEND_KINDS.get(backend, ())
        for w in serving
    ]
    # About an inch per group, so that the model names under the bars never run into each other.
    width = max(7.0, 1.0 * (max(len(lat_groups), 2) + max(len(srv_groups), 2)) + 1.6)
    fig, (ax_lat, ax_srv) = new_figure(width, 3.5, ncols=2)

    def tick(gpu: str, backend: str) -> str:
        return f"{gpu}\n{backend}\n{group_origin(df, gpu, backend).replace(', ', chr(10))}"

    if lat_groups:
        _grouped_bars(ax_lat, lat_groups, all_modes, lambda g, m: lookup.value((*g, wl, m, 1), "e2e_latency_s_mean"))
        ax_lat.set_xticks(range(len(lat_groups)), [tick(g, b) for g, b in lat_groups])
    else:
        empty_note(ax_lat, "no latency cells")
    ax_lat.set_ylabel("End-to-end latency, batch size 1 (s)")
    ax_lat.set_xlabel("GPU / backend / model")
    ax_lat.set_title(f"bs=1 latency, workload {wl} (lower is better)")

    groups = srv_groups
    if groups:
        _grouped_bars(ax_srv, groups, all_modes, lambda g, m: lookup.value((*g, m, None), "serving_output_tok_per_s"))
        labels = [f"{tick(g, b)}\n{T.serving_label(df, w)}" for g, b, w in groups]
        ax_srv.set_xticks(range(len(groups)), labels)
    else:
        empty_note(ax_srv, "no serving cells")
    ax_srv.set_ylabel("Serving output throughput (tok/s)")
    ax_srv.set_xlabel("GPU / backend / model / request rate")
    ax_srv.set_title("Serving throughput (higher is better)")
    mode_legend(fig, all_modes)
    return fig


def _log2_batch_axis(ax, sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("Batch size (sequences)")


def fig2_speedup(df: pd.DataFrame, lookup: Lookup, model: pd.DataFrame) -> Figure:
    """Speedup eager/graph vs batch size, a line per GPU and backend, the queue model's prediction
    dashed beside every backend it can model."""
    fig, (ax,) = new_figure(6.5, 3.2)
    sweep = D.sweep_workload(df)
    pairs = D.decode_pairs(df, lookup, sweep) if sweep else D.decode_pairs(df.iloc[0:0])
    model = model[model["workload"] == sweep]
    lookup.used |= D.paths_of(model)
    if pairs.empty:
        empty_note(ax, "no eager/graph latency pairs")
    gpus = sorted(pairs["gpu"].unique(), key=D.gpu_sort_key)
    handles = []
    groups = dict(list(pairs.groupby(["gpu", "backend"], sort=True)))
    for gpu, backend in sorted(groups, key=lambda k: (D.gpu_sort_key(k[0]), k[1])):
        sel = groups[(gpu, backend)]
        color, marker = series_color(gpus.index(gpu)), BACKEND_MARKERS.get(backend, "^")
        ok = sel[sel["speedup"].notna()]
        ax.plot(ok["batch_size"], ok["speedup"], color=color, marker=marker, ms=4, lw=1.2)
        # Gaps go into the series' legend entry: at shared batch sizes, labels on the plot would collide.
        gaps = [
            (row["batch_size"], D.gap_of(row["graph_gap"]) or D.gap_of(row["eager_gap"]) or MISSING)
            for row in sel[sel["speedup"].isna()].to_dict("records")
        ]
        label = f"{gpu} / {backend} / {group_origin(df, gpu, backend)}"
        label += f"\n  gaps: {gap_summary(gaps)}" if gaps else ""
        handles.append(Line2D([], [], color=color, marker=marker, ms=4, lw=1.2, label=label))
        pred = model[(model["gpu"] == gpu) & (model["backend"] == backend) & model["speedup_pred"].notna()]
        # a step that waits for the GPU is not a queue: its launches alone give a lower bound only
        bound = pred["regime"].str.startswith(D.NOT_A_QUEUE)
        if bound.any():
            ax.plot(pred.loc[bound, "batch_size"], pred.loc[bound, "speedup_pred"], color=color, marker="x", ms=7,
                    ls="none")  # fmt: skip
        if not pred[~bound].empty:
            ax.plot(pred.loc[~bound, "batch_size"], pred.loc[~bound, "speedup_pred"], color=color, marker=marker, ms=5,
                    lw=0.9, ls="--", mfc="none")  # fmt: skip
    ax.axhline(1.0, color=GAP_COLOR, lw=0.8, ls=":")
    if not model.empty:
        handles.append(Line2D([], [], color=GAP_COLOR, marker="o", mfc="none", ls="--", label="queue model"))
    if model["regime"].str.startswith(D.NOT_A_QUEUE).any():
        handles.append(Line2D([], [], color=GAP_COLOR, marker="x", ms=7, ls="none",
                              label="its launches alone (the step waits for the GPU: a lower bound)"))  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    sizes = sorted(int(b) for b in pairs["batch_size"].unique())
    if sizes:
        _log2_batch_axis(ax, sizes)
    else:
        ax.set_xlabel("Batch size (sequences)")
    ax.set_ylabel("Speedup, eager / graph decode time (×)")
    ax.set_title(f"What CUDA graphs buy per decode step ({sweep or 'no sweep'})")
    return fig


def gap_summary(gaps: list[tuple[int, str]]) -> str:
    """[(4, 'OOM'), (1, 'unsupported'), (16, 'unsupported')] -> 'bs 4 OOM; bs 1, 16 unsupported'."""
    by_label: dict[str, list[int]] = {}
    for bs, label in sorted(gaps):
        by_label.setdefault(label, []).append(bs)
    return "; ".join(f"bs {', '.join(map(str, sizes))} {label}" for label, sizes in sorted(by_label.items()))


def startup_parts(row: dict) -> dict[str, float] | str:
    """A startup cell's breakdown {part: seconds} incl. "rest" = total - parts, or its gap label."""
    if row is None:
        return MISSING
    total = value_or_gap(row, "startup_s")
    if isinstance(total, str):
        return total
    parts = {}
    for label, metrics, _ in STARTUP_PARTS:
        for m in metrics:
            if m == "compile_and_first_steps_s" and row.get("mode") == "eager":
                continue  # torch_compile's eager steps compile nothing: their first steps are rest
            v = value_or_gap(row, m)
            if not isinstance(v, str):
                parts[label] = v
                break
    # Parts can overlap in a backend's own log (vLLM's engine init spans compile and capture):
    # a negative remainder is shown as no "rest" rather than a negative bar.
    parts["rest"] = max(total - sum(parts.values()), 0.0)
    return parts


def fig3_startup(df: pd.DataFrame, lookup: Lookup) -> Figure:
    """Startup time per GPU, backend and mode, split into weight load / compile / graph capture / rest."""
    keys = sorted(
        {
            (r["gpu"], r["backend"], r["workload"], r["mode"])
            for r in df[df["kind"] == "startup"][["gpu", "backend", "workload", "mode"]].to_dict("records")
        },
        key=lambda k: (D.gpu_sort_key(k[0]), k[1], k[2], T.mode_sort_key(k[3])),
    )
    fig, (ax,) = new_figure(6.5, max(1.9, 0.42 * len(keys) + 1.3))
    if not keys:
        empty_note(ax, "no startup cells")
    labels, right = [], 0.0
    for i, (gpu, backend, workload, mode) in enumerate(keys):
        row = lookup.row((gpu, backend, workload, mode, None))
        labels.append(f"{gpu} / {backend} / {T.MODE_LABELS.get(mode, mode)}\n{origin([row])}")
        parts = startup_parts(row)
        if isinstance(parts, str):
            gap_mark(ax, i, parts, horizontal=True)
            continue
        left = 0.0
        for label, _, color in (*STARTUP_PARTS, ("rest", (), REST_COLOR)):
            if label in parts and parts[label] > 0:
                ax.barh(i, parts[label], left=left, color=color, height=0.7)
                left += parts[label]
        right = max(right, left)
        ax.annotate(f"{T.fmt(left)} s", (left, i), textcoords="offset points", xytext=(3, 0), va="center", fontsize=6)
    if right > 0:
        ax.set_xlim(0, right * 1.1)  # room for the total beside the longest bar
    ax.set_yticks(range(len(keys)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("Start-up time (s)")
    ax.set_ylabel("GPU / backend / mode, model")
    ax.set_title("Start-up breakdown")
    # Above the axes, not inside them: inside, it covered the longest bars and their totals.
    handles = [Patch(color=c, label=label) for label, _, c in STARTUP_PARTS] + [Patch(color=REST_COLOR, label="rest")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig


def _cumulative_source(sel: pd.DataFrame) -> str | None:
    """The cell whose running totals draw a series' line: the latency cell of the smallest batch,
    else the startup cell. (A startup cell starts with empty compile caches, so its warm-ups
    include the kernels' JIT compilation, which latency cells find cached or compile before.)"""
    cum = sel[sel["series"] == "cumulative"]
    if cum.empty:
        return None
    cells = cum.drop_duplicates("path").to_dict("records")
    order = sorted(
        cells,
        key=lambda r: (pd.isna(r["batch_size"]), 0 if pd.isna(r["batch_size"]) else int(r["batch_size"]), r["path"]),
    )
    return order[0]["path"]


def _capture_axes(ax, capture: pd.DataFrame, metric: str) -> None:
    """Log axes where the data spans decades (1 to 256 graphs, a few MB to hundreds): else the small
    sets sit in a heap at the origin. Plain numbers on the ticks."""
    if capture.empty:
        return
    if capture["n_graphs"].max() > 16:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    values = capture[metric]
    if (values > 0).all() and values.max() / values.min() > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_ylim(bottom=min(0.0, float(values.min())))


def fig4_capture_cost(df: pd.DataFrame, lookup: Lookup, capture: pd.DataFrame) -> Figure:
    """Graph memory (left) and capture time (right) vs the number of graphs captured, from the
    pipeline's own cells (aggregate.parse_capture_details).

    Line: the running totals as one pool captures its sizes, largest first (the smallest batch's
    latency cell, else the startup cell); crosses: every latency / startup cell's pool in total; diamonds: the
    capture_study cell, each set of sizes captured by a fresh pool on its own.
    """
    fig, axes = new_figure(7.0, 3.4, ncols=2)
    capture = capture if capture is not None else pd.DataFrame(columns=CAPTURE_COLUMNS)
    series = sorted(
        set(zip(capture["gpu"], capture["model"], capture["backend"], strict=True)),
        key=lambda k: (D.gpu_sort_key(k[0]), k[1], k[2]),
    )
    drawn: set[str] = set()
    for ax, metric, ylabel in zip(
        axes,
        ("graph_memory_mb", "capture_s"),
        ("Graph memory (MB)", "Capture time incl. warm-up (s)"),
        strict=True,
    ):
        if capture.empty:
            empty_note(
                ax,
                "no capture data: no cell records\ndetails.capture (cudagraph latency / startup)\nor details.capture_study",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        for i, (gpu, model, backend) in enumerate(series):
            sel = capture[(capture["gpu"] == gpu) & (capture["model"] == model) & (capture["backend"] == backend)]
            color = series_color(i)
            line = _cumulative_source(sel)
            if line is not None:
                cum = sel[(sel["series"] == "cumulative") & (sel["path"] == line)].sort_values("n_graphs")
                ax.plot(cum["n_graphs"], cum[metric], color=color, marker=".", lw=1.2)
                drawn.add(line)
            cells = sel[sel["series"] == "cell"]
            if not cells.empty:
                ax.plot(cells["n_graphs"], cells[metric], color=color, marker="x", ms=4, ls="none")
                drawn.update(cells["path"])
            study = sel[sel["series"] == "study"].sort_values("n_graphs")
            if not study.empty:
                ax.plot(study["n_graphs"], study[metric], color=color, marker="D", ms=5, ls="none", mfc="none")
                drawn.update(study["path"])
                right = capture["n_graphs"].max()
                for row in study.to_dict("records"):
                    last = row["n_graphs"] == right  # label the rightmost set to its left, inside the axes
                    ax.annotate(
                        row["label"],
                        (row["n_graphs"], row[metric]),
                        textcoords="offset points",
                        xytext=(-4, 4) if last else (4, 4),
                        ha="right" if last else "left",
                        va="bottom",
                        fontsize=6,
                        color=color,
                    )
        _capture_axes(ax, capture, metric)
        ax.set_xlabel("Graphs captured (count)")
        ax.set_ylabel(ylabel)
    for path in sorted(drawn):
        lookup.used.add(path)
    axes[0].set_title("Graph memory vs graphs captured")
    axes[1].set_title("Capture time vs graphs captured")
    if series:
        handles = []
        for i, (g, m, b) in enumerate(series):
            paths = capture.loc[(capture["gpu"] == g) & (capture["model"] == m) & (capture["backend"] == b), "path"]
            rows = df[df["path"].isin(set(paths))].sort_values("path").to_dict("records")
            label = f"{g} / {b} / {origin(rows) if rows else m}"
            handles.append(Line2D([], [], color=series_color(i), marker=".", label=label))
        kinds = set(capture["series"])
        if "cumulative" in kinds:
            handles.append(Line2D([], [], color=GAP_COLOR, marker=".", label="one pool, sizes added largest first"))
        if "cell" in kinds:
            handles.append(Line2D([], [], color=GAP_COLOR, marker="x", ls="none", label="each cell's pool (total)"))
        if "study" in kinds:
            handles.append(
                Line2D([], [], color=GAP_COLOR, marker="D", mfc="none", ls="none", label="capture study: one set each")
            )
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    return fig


def fig5_padding(df: pd.DataFrame, lookup: Lookup, capture_sizes: Sequence[int]) -> Figure:
    """Padding waste vs batch size for a capture-size list (computed), with measured cells as points."""
    measured_gpus = df.loc[(df["kind"] == "latency") & (df["mode"] == "cudagraph"), "gpu"].nunique()
    fig, (ax,) = new_figure(4.5, 3.6 + 0.15 * measured_gpus)
    sizes = sorted(set(capture_sizes))
    if not sizes:
        empty_note(ax, "no capture sizes configured")
    else:
        top = sizes[-1]
        n = np.arange(1, top + max(top // 4, 2) + 1)
        waste = [padding_waste(int(k), sizes) for k in n]
        inside = n <= top
        ax.plot(
            n[inside],
            [100 * w for w, i in zip(waste, inside, strict=True) if i],
            color=OKABE_ITO["blue"],
            drawstyle="steps-mid",
            lw=1.0,
            label="padded to next captured size",
        )
        ax.scatter(sizes, [0.0] * len(sizes), color=OKABE_ITO["blue"], s=10, zorder=3, label="captured size (no waste)")
        ax.axvspan(top + 0.5, n[-1] + 0.5, color=REST_COLOR, alpha=0.4, lw=0)
        ax.text(
            top + 0.5 + (n[-1] - top) / 2,
            90,
            "eager\nfallback\n(no graph)",
            ha="center",
            va="top",
            fontsize=6,
            color=GAP_COLOR,
        )
        mean = 100 * float(np.mean(waste[:top]))
        measured = df[(df["kind"] == "latency") & (df["mode"] == "cudagraph")]
        if "padding_waste_frac" in measured:
            measured = measured[measured["padding_waste_frac"].notna()]
            colors = [c for c in SERIES_COLORS if c != OKABE_ITO["blue"]]
            for i, gpu in enumerate(sorted(set(measured["gpu"]), key=D.gpu_sort_key)):
                sel = measured[measured["gpu"] == gpu]
                for row in sel.to_dict("records"):
                    lookup.row(cell_key(row))
                ax.scatter(
                    sel["batch_size"],
                    100 * sel["padding_waste_frac"],
                    marker="x",
                    s=18,
                    color=colors[i % len(colors)],
                    zorder=4,
                    label=f"measured: {gpu} cells ({origin(sel.to_dict('records'))})",
                )
        ax.set_xlim(0.5, n[-1] + 0.5)
        ax.set_ylim(-2, 100)
        # Below the axes: inside, a longer list of measured GPUs would cover the curve.
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=1,
            title=f"mean waste over bs 1..{top}: {T.fmt(mean)}%",
            title_fontsize=7,
        )
        ax.set_title(f"Padding waste, capture sizes {sizes_label(sizes)}")
    ax.set_xlabel("Batch size (sequences)")
    ax.set_ylabel("Compute spent on padding (%)")
    return fig


def fig6_roofline(df: pd.DataFrame, lookup: Lookup) -> Figure:
    """Each decode step (eager and graph) against its GPU's HBM floor, one panel per GPU."""
    sweep = D.sweep_workload(df)
    lat = df[(df["kind"] == "latency") & (df["workload"] == sweep)] if sweep else df.iloc[0:0]
    if "hbm_floor_ms" in lat:
        backends = sorted(set(lat.loc[lat["hbm_floor_ms"].notna(), "backend"]))
    else:
        backends = []
    lat = lat[lat["backend"].isin(backends)]
    gpus = sorted(lat["gpu"].unique(), key=D.gpu_sort_key)
    # Wide enough for the legend and title even with one panel (at 3 in they were cut off).
    fig, axes = new_figure(max(5.5, 2.8 * max(len(gpus), 1)), 3.4, ncols=max(len(gpus), 1))
    if not gpus:
        empty_note(axes[0], "no cell reports an HBM floor")
        axes[0].set_xlabel("Batch size (sequences)")
    for ax, gpu in zip(axes, gpus, strict=False):
        sel = lat[lat["gpu"] == gpu]
        sizes = sorted(int(b) for b in sel["batch_size"].dropna().unique())
        # only the backends measured on this GPU: another GPU's backend is not a gap here
        for b_i, backend in enumerate(b for b in backends if b in set(sel["backend"])):
            floor = []
            for mode in ("eager", "cudagraph"):
                xs, ys = [], []
                for bs in sizes:
                    row = lookup.row((gpu, backend, sweep, mode, bs))
                    v = value_or_gap(row, "decode_step_ms_median")
                    if isinstance(v, str):
                        if v != T.NOT_APPLICABLE:
                            gap_mark(ax, bs, v, MODE_COLORS[mode])
                        continue
                    xs.append(bs)
                    ys.append(v)
                    f = value_or_gap(row, "hbm_floor_ms")
                    if not isinstance(f, str):
                        floor.append((bs, f))
                        if mode == "cudagraph":
                            ax.annotate(
                                f"{T.fmt(v / f)}×",
                                (bs, v),
                                textcoords="offset points",
                                # beside the point (left of the last one); one backend's labels
                                # below its line, the next one's above; a backdrop keeps lines off them
                                xytext=(-5 if bs == sizes[-1] else 5, -10 if b_i % 2 == 0 else 4),
                                ha="right" if bs == sizes[-1] else "left",
                                fontsize=6,
                                color=MODE_COLORS[mode],
                                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                                zorder=5,  # above the floor line, drawn later, which a label may sit on
                            )
                ax.plot(xs, ys, color=MODE_COLORS[mode], marker=BACKEND_MARKERS.get(backend, "^"), ms=4, lw=1.2)
            floor = sorted(dict(floor).items())
            if floor:
                ax.plot([b for b, _ in floor], [f for _, f in floor], color=OKABE_ITO["black"], ls="--", lw=1.0)
        # log scale: a slow eager backend (tens of ms) and the floor (a few ms) both stay readable
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2, subs=(1.0, 1.5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if sizes:
            _log2_batch_axis(ax, sizes)
        ax.set_ylabel("Decode step (ms, log scale)")
        ax.set_title(f"{gpu}\n{group_origin(lat, gpu)}", fontsize=8)
    handles = [Line2D([], [], color=MODE_COLORS[m], marker="o", label=T.MODE_LABELS[m]) for m in ("eager", "cudagraph")]
    handles.append(Line2D([], [], color=OKABE_ITO["black"], ls="--", label="HBM floor (bytes / copy bandwidth)"))
    if len(backends) > 1:
        handles += [
            Line2D([], [], color=GAP_COLOR, marker=BACKEND_MARKERS.get(b, "^"), ls="none", label=b) for b in backends
        ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    fig.suptitle(f"Decode step vs the memory-bandwidth floor, {sweep or 'no sweep'}\n(labels: graph step / floor)",
                 fontsize=9)  # fmt: skip
    return fig


# The published study (vLLM, Llama-3.1-8B, bs 1, 256 in / 64 out): eager / graph latency per GPU.
# H200: 0.52 s -> 0.37 s; L40S: 2.87 s -> 2.85 s; A100: "~5%" (a table row, no seconds).
PUBLISHED_SPEEDUP = {"H200": 0.52 / 0.37, "A100": 1 / (1 - 0.05), "L40S": 2.87 / 2.85}
# The host cost per launch those runs are assumed to have had: the published write-up's own
# estimate ("~200-300 kernels x ~5-10 µs"); the hosts themselves were not measured.
PUBLISHED_HOST_US = (5.0, 10.0)
# Peak HBM bandwidth (vendor datasheets, TB/s): a memory-bound decode step's GPU time on another
# GPU is taken as the H200's times this ratio (an assumption, drawn dotted).
HBM_TBPS = {"H200": 4.8, "A100": 2.039, "L40S": 0.864}
HOST_US_AXIS = np.geomspace(2.0, 80.0, 61)


def fig7_launch_cost(
    df: pd.DataFrame, lookup: Lookup, model: pd.DataFrame, sequences: dict[tuple, pd.DataFrame]
) -> Figure:
    """Speedup at bs 1 against the host's CPU time per kernel: the queue model run on each
    backend's measured step at every host cost, our cells, and the published points."""
    fig, (ax,) = new_figure(6.5, 4.6)
    sweep = D.sweep_workload(df)
    model = model[model["workload"] == sweep]
    bs1 = model[(model["batch_size"] == 1) & model["graph_ms"].notna()]
    lookup.used |= D.paths_of(bs1)
    handles = []
    colors = {ref: series_color(i) for i, ref in enumerate(HBM_TBPS)}
    for gpu, backend in sorted({(r["gpu"], r["backend"]) for r in bs1.to_dict("records")}):
        row = bs1[(bs1["gpu"] == gpu) & (bs1["backend"] == backend)].iloc[0]
        e_key = (gpu, backend, row["workload"], "eager", 1)
        seq = sequences[e_key]
        aten, triton = row["host_aten_launch_us"], row["host_triton_launch_us"]
        own = next((ref for ref in HBM_TBPS if ref.lower() in gpu.lower()), None)
        style, marker = ("-" if backend == "graph_pool" else "--"), BACKEND_MARKERS.get(backend, "^")
        # the measured GPU's own kernels; on the other GPUs the same kernels, slower by the bandwidth ratio (dotted)
        for ref in list(HBM_TBPS) if own else [gpu]:
            scale = HBM_TBPS[own] / HBM_TBPS[ref] if own else 1.0
            speed = [
                Q.predict(seq, None, aten, triton, cpu_us_per_kernel=x, gpu_scale=scale, detail=False)["pred_ms"]
                / (row["graph_ms"] * scale)
                for x in HOST_US_AXIS
            ]
            mine = ref in (own, gpu)
            ax.plot(
                HOST_US_AXIS,
                speed,
                color=colors.get(ref, GAP_COLOR),
                ls=style if mine else ":",
                lw=1.2 if mine else 0.9,
            )
        color = colors.get(own, GAP_COLOR)
        hollow = row["basis"] == Q.BASIS_LAUNCH_ONLY
        ax.plot([row["us_per_kernel"]], [row["speedup"]], color=color, marker=marker, ms=7, ls="none",
                mfc="none" if hollow else color)  # fmt: skip
        label = f"{gpu} / {backend} ({int(row['kernels_per_step'])} kernels / step): model; marker = measured"
        label += " at its bare launch cost per kernel (no host time per step recorded)" if hollow else ""
        handles.append(
            Line2D([], [], color=color, ls=style, marker=marker, mfc="none" if hollow else color, label=label)
        )
    lo, hi = PUBLISHED_HOST_US
    for ref, speed in PUBLISHED_SPEEDUP.items():
        ax.plot([lo, hi], [speed, speed], color=colors[ref], lw=5, alpha=0.55, solid_capstyle="butt")
        handles.append(Line2D([], [], color=colors[ref], lw=5, alpha=0.55,
                              label=f"published vLLM on {ref}: {T.fmt(speed)}× (host assumed {lo:g}–{hi:g} µs)"))  # fmt: skip
    for ref in list(HBM_TBPS)[1:]:
        handles.append(Line2D([], [], color=colors[ref], ls=":", label=f"model on {ref}: H200 kernels × "
                              f"{HBM_TBPS['H200'] / HBM_TBPS[ref]:.2g} (HBM bandwidth ratio)"))  # fmt: skip
    if bs1.empty:
        empty_note(ax, "no bs=1 eager cell with a launch sequence and a graph cell")
    ax.axhline(1.0, color=GAP_COLOR, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(HOST_US_AXIS[0], HOST_US_AXIS[-1])
    ax.set_ylim(0.9, 12)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "2358" else ""))
    ax.set_xlabel("Host CPU time per kernel launched (µs)")
    ax.set_ylabel("Speedup at bs=1, eager / graph (×)")
    ax.set_title(f"Graph speedup vs the host's launch cost ({sweep or 'no sweep'}, bs=1)")
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=7)
    return fig


def fig8_vllm_modes(df: pd.DataFrame, lookup: Lookup) -> Figure:
    """vLLM's end-to-end latency per mode against batch size, one panel per GPU; the legend names
    the graph mode vLLM ran and each mode's capture time and graph memory at start-up."""
    vl = df[df["backend"] == T.VLLM]
    sweep = D.sweep_workload(vl) if not vl.empty else None
    gpus = sorted(vl["gpu"].unique(), key=D.gpu_sort_key) if sweep else []
    fig, axes = new_figure(max(5.5, 3.0 * max(len(gpus), 1)), 3.6, ncols=max(len(gpus), 1))
    if not gpus:
        empty_note(axes[0], "no vLLM latency cells")
    handles = {}
    for ax, gpu in zip(axes, gpus, strict=False):
        sel = vl[(vl["gpu"] == gpu) & (vl["workload"] == sweep)]
        sizes = sorted(int(b) for b in sel["batch_size"].dropna().unique())
        startup = next(iter(D.workloads_of_kind(vl[vl["gpu"] == gpu], "startup")), None)
        for mode in T.modes_of(vl[vl["gpu"] == gpu], gpu, T.VLLM):
            xs, ys = [], []
            for bs in sizes:
                v = lookup.value((gpu, T.VLLM, sweep, mode, bs), "e2e_latency_s_mean")
                if isinstance(v, str):
                    if v != T.NOT_APPLICABLE:
                        gap_mark(ax, bs, v, MODE_COLORS.get(mode, GAP_COLOR))
                    continue
                xs.append(bs)
                ys.append(v)
            color = MODE_COLORS.get(mode, GAP_COLOR)
            marker = MODE_MARKERS.get(mode, "s")
            ax.plot(xs, ys, color=color, marker=marker, ms=4, lw=1.2, mfc="none")
            label = T.MODE_LABELS.get(mode, mode)
            if startup is not None:
                cap = lookup.value((gpu, T.VLLM, startup, mode, None), "capture_s")
                mem = lookup.value((gpu, T.VLLM, startup, mode, None), "graph_memory_mb")
                if not isinstance(cap, str):
                    label += f" (capture {cap:g} s, {T.fmt(mem)} MB on {gpu})"  # vLLM logs whole seconds
            handles.setdefault(label, Line2D([], [], color=color, marker=marker, ms=4, lw=1.2, mfc="none", label=label))
        if sizes:
            _log2_batch_axis(ax, sizes)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("End-to-end latency (s)")
        ax.set_title(f"{gpu}\n{group_origin(vl, gpu, T.VLLM)}", fontsize=8)
    if handles:
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=1)
    fig.suptitle(f"vLLM: what each mode buys ({sweep or 'no sweep'})", fontsize=9)
    return fig


def build_figures(
    df: pd.DataFrame,
    *,
    capture: pd.DataFrame | None = None,
    sequences: dict[tuple, pd.DataFrame] | None = None,
    capture_sizes: Sequence[int] = (),
    model: pd.DataFrame | None = None,
) -> dict[str, tuple[Figure, set[str], dict]]:
    """Draw every figure: name -> (figure, result files drawn from, extra sidecar fields).
    sequences: the cells' launch sequences (queue_model.cell_sequences); model: the launch model
    of df and those sequences (derived.launch_model), computed here when the caller has none."""
    sequences = sequences or {}
    model = D.launch_model(df, sequences=sequences) if model is None else model
    builders = {
        "fig1_latency_throughput": lambda lk: fig1_latency_throughput(df, lk),
        "fig2_speedup": lambda lk: fig2_speedup(df, lk, model),
        "fig3_startup": lambda lk: fig3_startup(df, lk),
        "fig4_capture_cost": lambda lk: fig4_capture_cost(df, lk, capture),
        "fig5_padding": lambda lk: fig5_padding(df, lk, capture_sizes),
        "fig6_roofline": lambda lk: fig6_roofline(df, lk),
        "fig7_launch_cost": lambda lk: fig7_launch_cost(df, lk, model, sequences),
        "fig8_vllm_modes": lambda lk: fig8_vllm_modes(df, lk),
    }
    out = {}
    with matplotlib.rc_context(STYLE):
        for name in FIGURE_NAMES:
            lookup = Lookup(df)
            extra = {"capture_sizes": sorted(set(capture_sizes))} if name == "fig5_padding" else {}
            out[name] = (builders[name](lookup), lookup.used, extra)
    return out


def write_figures(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    capture: pd.DataFrame | None = None,
    sequences: dict[tuple, pd.DataFrame] | None = None,
    capture_sizes: Sequence[int] = (),
    code: tuple | None = None,
    model: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw and write every figure as PDF + PNG + sidecar JSON; returns the paths (= figure_outputs(out_dir))."""
    out = Path(out_dir)
    written = []
    for name, (fig, used, extra) in build_figures(
        df, capture=capture, sequences=sequences, capture_sizes=capture_sizes, model=model
    ).items():
        blobs = render(fig)
        blobs["json"] = sidecar(name, df, used, code, files=[f"{name}.pdf", f"{name}.png"], **extra).encode()
        written += [write_atomic(out / f"{name}.{ext}", blobs[ext]) for ext in FIGURE_FORMATS]
    return written


def check_fonts() -> str:
    """The file DejaVu Sans resolves to; raises RuntimeError unless it is matplotlib's own copy."""
    from matplotlib import font_manager

    with matplotlib.rc_context(STYLE):
        path = font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    if not Path(path).resolve().is_relative_to(Path(matplotlib.get_data_path()).resolve()):
        raise RuntimeError(
            f"DejaVu Sans resolves to {path}, not matplotlib's copy: figures would not be byte-identical"
        )
    return path
