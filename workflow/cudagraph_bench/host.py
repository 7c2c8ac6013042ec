"""The host a cell ran on, measured inside its job: what an eager number must be read against.

Eager decode is bound by how fast the host CPU enqueues kernels, so every latency cell records,
right before its measurement, the CPU's model and clock, the cores the job may use, and the CPU
time of one launch of each kind (an ATen kernel, a Triton kernel, one replay of a CUDA graph).
Also here: the spread statistics every latency cell reports, and the rule that gives a noisy
cell more timed steps.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from pathlib import Path

# the profiler annotation around one profiled step; it also shows on the device as an event of
# its own, which is not a kernel (result files written before commit ee48d78 counted it as one)
STEP_MARK = "cgb_step"
# runtime calls that block the host until the GPU is done (or may): synchronisations, blocking copies, allocation
HOST_WAIT_APIS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMalloc", "cudaFree",
                  "cudaHostAlloc", "cuStreamSynchronize", "cuCtxSynchronize", "cuMemAlloc", "cuMemFree")  # fmt: skip
# host API calls that put work on a stream; a device op's call is the one with its correlation id
LAUNCH_APIS = ("cudaLaunch", "cuLaunch", "cudaMemcpy", "cudaMemset", "cuMemcpy", "cuMemset", "cudaGraphLaunch",
               "cuGraphLaunch")  # fmt: skip


def waits_for_gpu(api: str) -> bool:
    """Whether a traced host API call can block until the GPU is done (HOST_WAIT_APIS, or a
    synchronous cudaMemcpy)."""
    return api == "cudaMemcpy" or api.startswith(HOST_WAIT_APIS)


def short_name(name: str) -> str:
    """A kernel name as results record it: at most 80 characters."""
    return name if len(name) < 80 else name[:77] + "..."


def launch_record(ops, profiled_ms: float | None, host_waits) -> dict:
    """The `launches` record of one profiled step, as the queue model reads it
    (aggregate.parse_launch_details), from its device ops in issue order, each given as
    (name, is_memop, launch_api, issue_us, gpu_us): launch_api is the traced host call that
    put it on the stream (None where the profiler traces none: Triton's launcher), issue_us
    that call's start from the step's (or None). Kinds: "memop"; "runtime" for a cuda* call
    (ATen); "driver" for a cu* call (cuBLAS, cuDNN) or none. Names are indices into "names"."""
    names: list[str] = []
    index: dict[str, int] = {}
    seq: dict[str, list] = {"kind": [], "name": [], "issue_us": [], "gpu_us": []}
    for name, is_memop, api, issue_us, gpu_us in ops:
        if is_memop:
            kind = "memop"
        else:
            kind = "runtime" if api is not None and api.startswith("cuda") else "driver"
        name = short_name(name)
        if name not in index:
            index[name] = len(names)
            names.append(name)
        seq["kind"].append(kind)
        seq["name"].append(index[name])
        seq["issue_us"].append(None if issue_us is None else round(issue_us, 3))
        seq["gpu_us"].append(round(gpu_us, 3))
    return seq | {"names": names, "profiled_call_ms": profiled_ms, "host_waits": sorted(host_waits)}


CV_LIMIT = 0.02  # an eager cell whose steps vary more than this gets more timed steps ...
MAX_ROUNDS = 4  # ... up to this many rounds of timed_steps, then is flagged


def cpu_info() -> dict:
    """CPU model, its clock as /proc/cpuinfo reports it now, and the cores this process may run on."""
    model, mhz = None, []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key == "cpu MHz":
                mhz.append(float(value))
    except (OSError, ValueError):
        pass
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = list(range(os.cpu_count() or 1))
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_mhz_median": statistics.median(mhz) if mhz else None,
        "cpu_affinity": _ranges(cores),
        "cpu_cores_usable": len(cores),
    }


def _ranges(cores: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (as taskset prints it)."""
    out, start = [], None
    for i, c in enumerate(cores):
        if start is None:
            start = c
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


def launch_costs(device, calls: int = 2000) -> dict:
    """CPU microseconds per launch on `device` (CUDA): an ATen kernel (in-place add on a small
    tensor), a Triton kernel that does nothing, and one replay of a 100-kernel CUDA graph. Each is
    timed over `calls` back-to-back calls (the GPU finishes each tiny kernel faster than the CPU
    issues the next, so host time per call is the launch cost); a few hundred ms in all."""
    import torch

    x = torch.zeros(256, device=device)
    out: dict = {}

    def per_call_us(fn, n: int) -> float:
        for _ in range(20):
            fn()
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        us = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize(device)
        return us

    out["aten_launch_us"] = per_call_us(lambda: x.add_(1.0), calls)
    try:
        noop = _triton_noop()
        out["triton_launch_us"] = per_call_us(lambda: noop[(1,)](x), calls)
    except Exception as e:  # noqa: BLE001 - no Triton here: record why, keep the rest
        out["triton_launch_error"] = f"{type(e).__name__}: {e}"
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        x.add_(1.0)
    torch.cuda.current_stream(device).wait_stream(side)
    with torch.cuda.graph(graph):
        for _ in range(100):
            x.add_(1.0)
    out["graph_replay_us"] = per_call_us(graph.replay, max(calls // 10, 50))
    out["graph_kernels"] = 100
    return out


def _triton_noop():
    import triton
    import triton.language as tl

    @triton.jit
    def noop(X):
        pid = tl.program_id(0)
        if pid < 0:  # never true: the kernel launches and returns
            tl.store(X, 0.0)

    return noop


def host_record(device) -> dict:
    """cpu_info() plus, on a CUDA device, launch_costs(); never raises (a failure is recorded)."""
    rec = cpu_info()
    if getattr(device, "type", str(device)) == "cuda":
        try:
            rec.update(launch_costs(device))
        except Exception as e:  # noqa: BLE001 - the cell's own numbers must not be lost to this
            rec["launch_costs_error"] = f"{type(e).__name__}: {e}"
    return rec


def quantile(xs: list[float], q: float) -> float:
    """Quantile with linear interpolation (numpy's default)."""
    ys = sorted(xs)
    i = (len(ys) - 1) * q
    lo = int(i)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (i - lo)


def spread(times: list[float]) -> dict:
    """median, p10, p90 and coefficient of variation (stdev / mean) of a list of timings."""
    mean = statistics.fmean(times)
    cv = statistics.stdev(times) / mean if len(times) > 1 and mean > 0 else 0.0
    return {"median": quantile(times, 0.5), "p10": quantile(times, 0.1), "p90": quantile(times, 0.9), "cv": cv}


def timed_until_stable(measure_round, adaptive: bool) -> tuple[list[float], dict]:
    """Call measure_round() (one round of timed steps -> list of ms) until the steps' CV is at
    most CV_LIMIT or MAX_ROUNDS rounds ran (only one round unless `adaptive`).
    Python's garbage collector is off during the rounds (as timeit does): an eager step creates
    thousands of Python objects, and a collection landing in one step would be host noise.
    Returns (all timings, {"rounds", "cv", "cv_over_limit", "gc"})."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        times = list(measure_round())
        rounds = 1
        while adaptive and rounds < MAX_ROUNDS and spread(times)["cv"] > CV_LIMIT:
            times += measure_round()
            rounds += 1
    finally:
        if was_enabled:
            gc.enable()
    cv = spread(times)["cv"]
    return times, {"rounds": rounds, "cv": cv, "cv_over_limit": cv > CV_LIMIT, "gc": "off while timing"}


def host_metrics(host: dict) -> dict:
    """The numeric part of a host record, as metrics (host_*)."""
    keys = ("aten_launch_us", "triton_launch_us", "graph_replay_us", "cpu_mhz_median", "cpu_cores_usable")
    return {f"host_{k}": float(host[k]) for k in keys if isinstance(host.get(k), int | float)}


def step_metrics(times: list[float], stab: dict, host_ms: list[float] | None = None) -> dict:
    """Decode-step statistics: median, p10, p90 (ms), coefficient of variation, steps timed, and
    whether the CV stayed above the limit after the extra rounds (1.0) or not (0.0); with host_ms
    (the host's time to issue each timed step), its median, p10 and p90 as step_host_ms_*."""
    sp = spread(times)
    host = {}
    if host_ms:
        hs = spread(host_ms)
        host = {"step_host_ms_median": hs["median"], "step_host_ms_p10": hs["p10"], "step_host_ms_p90": hs["p90"]}
    return host | {
        "decode_step_ms_median": sp["median"],
        "decode_step_ms_p10": sp["p10"],
        "decode_step_ms_p90": sp["p90"],
        "decode_step_cv": sp["cv"],
        "decode_steps_timed": float(len(times)),
        "decode_step_cv_over_limit": float(stab["cv_over_limit"]),
    }


def main() -> None:
    """`python -m cudagraph_bench.host`: host_record() of the first CUDA device (the CPU alone
    where there is none), as one JSON object on stdout. Cells whose measurement runs in another
    program (vLLM) take their host record from this child, so that the job's own process holds
    no CUDA context while vLLM sizes its memory."""
    import json

    import torch

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    print(json.dumps(host_record(device)))


if __name__ == "__main__":
    main()
