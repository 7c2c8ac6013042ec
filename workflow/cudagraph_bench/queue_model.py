"""The launch-overhead model: an eager decode step as a queue between the host and the GPU.

The host issues the step's kernels one after another; kernel i is issued at
issue_i = issue_{i-1} + c_i (c_i: the host's time for that launch, Python and dispatch
included). The GPU runs kernels in issue order, each as soon as it is issued and its
predecessor is done: start_i = max(issue_i, end_{i-1}), end_i = start_i + d_i. The step ends
with the last kernel, at end_N. Unlike max(total CPU, total GPU), the queue sees the GPU idle
whenever a short kernel finishes before the host issues the next one.

Inputs, all from the eager cell's own result file:
- d_i: each kernel's GPU time, from the cell's profiled step (details.launches.gpu_us; a
  kernel's duration does not depend on when it was issued, only the gaps between kernels do);
- c_i: the host's time to issue a whole step, shared among the kernels in proportion to the
  host's launch cost of each one's kind, measured in the same job. That host time is the median
  over the cell's timed steps (metrics.step_host_ms_median) where the cell records it, else the
  CPU enqueue time measured in a separate loop while the GPU was busy
  (metrics.cpu_enqueue_ms_per_step); the launch costs themselves are measured in the same job
  (host_aten_launch_us for the CUDA runtime's launches, host_triton_launch_us for the driver
  API's). Where a step's enqueue time could not be measured, c_i is the bare launch cost of its
  kind ("launch costs only": a lower bound, Python and dispatch left out).

aggregate.parse_launch_details turns result files into one row per device op; `predict` runs the queue for
one cell at its host's cost or at any other host cost (`cpu_us_per_kernel`), which is how the
model places the published hosts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

KINDS = ("runtime", "driver", "memop")
# what each kind was on the H200: ATen's kernels through the runtime; Triton's, cuBLAS's nvjet GEMMs
# and cuDNN's attention through the driver API
KIND_LABELS = {
    "runtime": "CUDA runtime (ATen)",
    "driver": "driver API (Triton, cuBLAS, cuDNN)",
    "memop": "memcpy / memset",
}
BASIS_STEP_HOST = "timed steps' host time"
BASIS_ENQUEUE = "measured enqueue"
BASIS_LAUNCH_ONLY = "launch costs only"


def cell_sequences(launches: pd.DataFrame | None) -> dict[tuple, pd.DataFrame]:
    """The device ops of every cell, (gpu, backend, workload, mode, batch size) -> its ops in issue
    order (one pass over the frame). launches: aggregate.parse_launch_details."""
    if launches is None or launches.empty:
        return {}
    keys = ["gpu", "backend", "workload", "mode", "batch_size"]
    return {(g, b, w, m, int(bs)): sel.sort_values("i") for (g, b, w, m, bs), sel in launches.groupby(keys, sort=False)}


def simulate(c_us: Sequence[float], d_us: Sequence[float]) -> tuple[float, list[float]]:
    """(end of the last kernel, GPU idle time before each kernel), both in µs from the step's start."""
    issue = end = 0.0
    idle = []
    for c, d in zip(c_us, d_us, strict=True):
        issue += c
        start = max(issue, end)
        idle.append(start - end)
        end = start + d
    return end, idle


def step_end(c_us: Sequence[float], d_us: Sequence[float]) -> float:
    """simulate's end alone, in closed form: end_N = max over i of (issue_i + d_i + ... + d_N)
    (the last kernel that had to wait for the host decides), vectorised."""
    issue = np.cumsum(np.asarray(c_us, dtype=float))
    rest = np.cumsum(np.asarray(d_us, dtype=float)[::-1])[::-1]
    return float(np.max(issue + rest)) if len(issue) else 0.0


def launch_weights(kinds: Sequence[str], aten_us: float, triton_us: float) -> list[float]:
    """The host's bare launch cost of each kernel, by the kind of its launch."""
    return [triton_us if k == "driver" else aten_us for k in kinds]


def predict(
    seq: pd.DataFrame,
    enqueue_ms: float | None,
    aten_us: float,
    triton_us: float,
    *,
    cpu_us_per_kernel: float | None = None,
    gpu_scale: float = 1.0,
    basis: str = BASIS_ENQUEUE,
    detail: bool = True,
) -> dict:
    """Run the queue for one cell's step.

    enqueue_ms: the host's measured time to issue one step (None or NaN: launch costs only), whose
    origin `basis` names. cpu_us_per_kernel:
    instead, a host whose mean CPU cost per kernel is this (the same shares by kind). gpu_scale:
    multiply every d_i (a GPU with proportionally less bandwidth). Returns {"pred_ms",
    "cpu_ms", "bare_launch_ms" (the launches at the bare cost of their kinds), "gpu_ms", "idle_ms", "basis", "by_kind": {kind: {"kernels", "cpu_ms", "gpu_ms",
    "idle_ms"}}}; detail=False: {"pred_ms", "basis"} only (the closed form, for curves)."""
    kinds = seq["kind"].tolist()
    d = [x * gpu_scale for x in seq["gpu_us"].tolist()]
    w = launch_weights(kinds, aten_us, triton_us)
    if cpu_us_per_kernel is not None:
        scale, basis = cpu_us_per_kernel * len(w) / sum(w), "assumed host"
    elif enqueue_ms is not None and not math.isnan(enqueue_ms):
        scale = enqueue_ms * 1e3 / sum(w)
    else:
        scale, basis = 1.0, BASIS_LAUNCH_ONLY
    c = [x * scale for x in w]
    if not detail:
        return {"pred_ms": step_end(c, d) / 1e3, "basis": basis}
    end, idle = simulate(c, d)
    by_kind: dict[str, dict] = {}
    for k, ci, di, gi in zip(kinds, c, d, idle, strict=True):
        e = by_kind.setdefault(k, {"kernels": 0, "cpu_ms": 0.0, "gpu_ms": 0.0, "idle_ms": 0.0})
        e["kernels"] += 1
        e["cpu_ms"] += ci / 1e3
        e["gpu_ms"] += di / 1e3
        e["idle_ms"] += gi / 1e3
    return {
        "pred_ms": end / 1e3,
        "cpu_ms": sum(c) / 1e3,
        "bare_launch_ms": sum(w) / 1e3,
        "gpu_ms": sum(d) / 1e3,
        "idle_ms": sum(idle) / 1e3,
        "basis": basis,
        "by_kind": {k: by_kind[k] for k in KINDS if k in by_kind},
    }
