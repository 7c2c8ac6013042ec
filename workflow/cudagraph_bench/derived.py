"""Derived frames: what the tables and the figures draw, computed from the tidy table (and, for
the queue model, the launch sequences of the result files) and from nothing else.

    summary.csv (aggregate) --> decode pairs, the launch model (here) --> tables.py, figures.py

Neither tables nor figures compute a derived frame of their own: `launch_model` is run once per
output pass (rebuild, or one Snakemake rule) and handed to both. Every row names the result files
it was computed from (`paths`), for the outputs' provenance sidecars.
"""

from __future__ import annotations

import math

import pandas as pd

from . import queue_model as Q
from .aggregate import Lookup

DERIVED_GAP = "—"  # a ratio or prediction whose input is a gap
HEADLINE_GPU = "h200"  # the published study's GPU: listed first
# The model holds where |predicted - measured| / measured is at most this.
MODEL_TOLERANCE = 0.10
# a step whose GPU idles for more than this share of it waiting for the host is launch-bound
LAUNCH_BOUND_IDLE = 0.10
# the regime of a step that waits for the GPU (a host call that blocks): the queue model does not apply
NOT_A_QUEUE = "not a queue"


# --------------------------------------------------------------------------- selections


def workloads_of_kind(df: pd.DataFrame, kind: str) -> list[str]:
    return sorted(df.loc[df["kind"] == kind, "workload"].unique())


def gpu_sort_key(gpu: str) -> tuple:
    """The headline GPU first, then the others by name."""
    return (gpu != HEADLINE_GPU, gpu)


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
    "paths",
]


def decode_pairs(df: pd.DataFrame, lookup: Lookup | None = None, workload: str | None = None) -> pd.DataFrame:
    """Eager vs graph decode time per (gpu, backend, latency workload, batch size); one workload if given.

    eager_ms / graph_ms are NaN where the cell has no number, and eager_gap /
    graph_gap then hold its label; speedup = eager / graph; paths: the two cells' result files.
    """
    lookup = lookup or Lookup(df)
    lat = df[df["kind"] == "latency"]
    if workload is not None:
        lat = lat[lat["workload"] == workload]
    rows = []
    for (gpu, backend, wl, bs), _ in lat.groupby(["gpu", "backend", "workload", "batch_size"], sort=True):
        metric = decode_metric(df, backend)
        lookup.begin()
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
                "paths": tuple(sorted({r["path"] for r in lookup.consulted()})),
            }
        )
    rows.sort(key=lambda r: (gpu_sort_key(r["gpu"]), r["backend"], r["workload"], r["batch_size"]))
    return pd.DataFrame.from_records(rows, columns=PAIR_COLUMNS)


MODEL_COLUMNS = PAIR_COLUMNS + [
    "kernels_per_step",
    "cpu_enqueue_ms",
    "us_per_kernel",
    "bare_launch_ms",
    "host_aten_launch_us",
    "host_triton_launch_us",
    "gpu_kernel_ms",
    "gpu_idle_ms",
    "basis",
    "eager_pred_ms",
    "speedup_pred",
    "error",
    "holds",
    "regime",
    "by_kind",
]


def launch_model(
    df: pd.DataFrame,
    launches: pd.DataFrame | None = None,
    *,
    sequences: dict[tuple, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The queue model (queue_model.py) against every eager / graph latency pair whose eager cell
    recorded its launch sequence (the `launches` frame, aggregate.parse_launch_details; or its
    `sequences`, Q.cell_sequences of it, where the caller has them already).

    Predicted eager step = the queue run on the cell's own kernels, with the host's measured CPU
    enqueue time (else its bare launch costs: basis); predicted speedup = predicted eager /
    measured graph step; error = (predicted - measured) / measured eager step; holds = |error| <=
    MODEL_TOLERANCE. Pairs without a sequence are left out."""
    sequences = Q.cell_sequences(launches) if sequences is None else sequences
    lookup = Lookup(df)
    rows = []
    for p in decode_pairs(df, lookup).to_dict("records"):
        e_key = (p["gpu"], p["backend"], p["workload"], "eager", p["batch_size"])
        seq = sequences.get(e_key)
        if seq is None or isinstance(p["eager_gap"], str):
            continue
        num = {
            k: (math.nan if isinstance(v, str) else v)
            for k, v in (
                ("h", lookup.value(e_key, "step_host_ms_median")),
                ("c", lookup.value(e_key, "cpu_enqueue_ms_per_step")),
                ("aten", lookup.value(e_key, "host_aten_launch_us")),
                ("triton", lookup.value(e_key, "host_triton_launch_us")),
            )
        }
        if math.isnan(num["aten"]) or math.isnan(num["triton"]):
            continue  # no host launch costs recorded: nothing to share the CPU time by
        waits = str(seq["waits_for_gpu"].iloc[0])
        if not math.isnan(num["h"]):  # the timed steps' own host time: no noise between two loops
            q = Q.predict(seq, num["h"], num["aten"], num["triton"], basis=Q.BASIS_STEP_HOST)
        else:
            q = Q.predict(seq, num["c"], num["aten"], num["triton"])
        pred, measured = q["pred_ms"], p["eager_ms"]
        error = pred / measured - 1 if measured > 0 else math.nan
        rows.append(
            dict(
                p,
                kernels_per_step=float(len(seq)),
                cpu_enqueue_ms=q["cpu_ms"],
                us_per_kernel=q["cpu_ms"] * 1000 / len(seq),
                bare_launch_ms=q["bare_launch_ms"],
                host_aten_launch_us=num["aten"],
                host_triton_launch_us=num["triton"],
                gpu_kernel_ms=q["gpu_ms"],
                gpu_idle_ms=q["idle_ms"],
                basis=q["basis"],
                eager_pred_ms=pred,
                speedup_pred=pred / p["graph_ms"] if p["graph_ms"] > 0 else math.nan,
                error=error,
                # a step that waits for the GPU is not a queue: its host time includes the wait
                holds=None if math.isnan(error) or waits else abs(error) <= MODEL_TOLERANCE,
                regime=f"{NOT_A_QUEUE}: {waits}"
                if waits
                else ("launch-bound" if q["idle_ms"] > LAUNCH_BOUND_IDLE * pred else "GPU-bound"),
                by_kind=q["by_kind"],
            )
        )
    return pd.DataFrame.from_records(rows, columns=MODEL_COLUMNS)


def paths_of(frame: pd.DataFrame) -> set[str]:
    """The result files a pairs / model frame (or a selection of its rows) was computed from."""
    return {p for paths in frame["paths"] for p in paths} if "paths" in frame else set()
