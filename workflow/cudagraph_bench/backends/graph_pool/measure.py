"""Measure one cell of the graph-pool backend: decode latency, start-up, and the mechanism.

measure() is the entry point the runner calls. The helpers below it are public so the
benchmark script can reuse one model across many measurements:

- decode_step_times: per-step CUDA-event latency; each step starts on an idle GPU (the host
  synchronises first, as a server must to read sampled tokens), so launch overhead shows.
- e2e_latencies: prefill (eager) + output_len - 1 decode steps, like vLLM's benchmark_latency.
- count_kernels, cpu_enqueue_ms, graph_gpu_ms: kernels per step, CPU time to enqueue one
  step while the GPU is busy, GPU time per step with back-to-back replays.
- copy_bandwidth_gbps, bytes_per_step: the HBM floor = bytes a step must read / copy bandwidth.
- capture_size_study: graph memory and capture time against the list of capture sizes.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections import Counter
from typing import TextIO

import torch

from cudagraph_bench.cells import BACKEND_KINDS, BACKEND_MODES
from cudagraph_bench.errors import MeasurementError, Unsupported
from cudagraph_bench.host import (
    LAUNCH_APIS,
    STEP_MARK,
    host_metrics,
    host_record,
    launch_record,
    quantile,
    short_name,
    step_metrics,
    timed_until_stable,
    waits_for_gpu,
)

from .model import ModelArgs, Transformer, build_model, triton_unsupported_reason
from .padding import padded_size, padding_waste, validate_capture_sizes
from .pool import CUDAGraphPool, compare


class CheckFailed(MeasurementError):
    """A correctness check of the pool failed; `details` holds every comparison."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


NO_CUDA = "CUDA graphs need a CUDA device; this node has none"
KINDS = BACKEND_KINDS["graph_pool"]
MODES = BACKEND_MODES["graph_pool"]
PADDED_CHECK_SIZES = (3, 5, 37)  # batch sizes that are not captured: they run a padded graph


def measure(kind: str, mode: str, batch_size: int | None, model: dict, workload: dict, settings: dict,
            log: TextIO | None = None) -> dict:  # fmt: skip
    """Measure one cell (the signature every backend's measure() has; log: the cell's log, for progress).

    kind: 'latency' | 'startup'; mode: 'eager' | 'cudagraph'; model: a preset dict; workload:
    {'input_len', 'output_len'} for latency; settings: warmup_steps, timed_steps, repeats,
    warmup_repeats, capture_sizes, seed, device (optional: backend 'auto'|'triton'|'torch').
    Returns {'metrics': {name: float}, 'details': {...}}. Raises Unsupported for a cell that
    cannot run here, ValueError for a bad argument; lets torch.cuda.OutOfMemoryError through.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    s = _check_settings(settings)
    device = torch.device(s["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Unsupported("settings ask for a CUDA device; this node has none")
    if mode == "cudagraph" and device.type != "cuda":
        raise Unsupported(NO_CUDA)
    args = ModelArgs.from_preset(model)
    torch.manual_seed(s["seed"])
    say(log, f"[graph_pool] {kind}, {mode}{f', bs {batch_size}' if batch_size else ''}, on {device}")
    if kind == "startup":
        return _measure_startup(mode, args, s, device)
    if kind in ("check", "capture_study"):
        if mode != "cudagraph":
            raise ValueError(f"{kind} cells measure the graphs: mode must be 'cudagraph', got {mode!r}")
        if kind == "check":
            return _measure_check(args, workload, s, device)
        return _measure_capture_study(args, workload, s, device)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"latency cells need a positive integer batch_size, got {batch_size!r}")
    input_len, output_len = int(workload["input_len"]), int(workload["output_len"])
    if input_len < 1 or output_len < 1 or input_len + output_len > args.max_seq_len:
        raise ValueError(f"need 1 <= input_len, output_len and input_len + output_len <= max_seq_len "
                         f"({args.max_seq_len}); got {input_len}, {output_len}")  # fmt: skip
    return _measure_latency(mode, batch_size, args, input_len, output_len, s, device)


def say(log: TextIO | None, line: str) -> None:
    """A progress line in the cell's log (a backend's measure() may be called without one)."""
    if log is not None:
        print(line, file=log, flush=True)


# Settings the config owns (its `measurement` block and graph_pool.capture_sizes): no default here.
REQUIRED_SETTINGS = ("warmup_steps", "timed_steps", "repeats", "warmup_repeats", "seed", "capture_sizes")


def _check_settings(settings: dict) -> dict:
    s = {"device": "cuda" if torch.cuda.is_available() else "cpu", "backend": "auto"}  # the machine's, not the study's
    s.update({k: v for k, v in settings.items() if v is not None})
    missing = [k for k in REQUIRED_SETTINGS if k not in s]
    if missing:
        raise ValueError(
            f"settings {missing} are required (the config's measurement block and graph_pool.capture_sizes)"
        )
    for k in ("warmup_steps", "timed_steps", "repeats", "warmup_repeats", "seed"):
        if not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < 0:
            raise ValueError(f"setting {k} must be a non-negative integer, got {s[k]!r}")
    if s["repeats"] < 1 or s["timed_steps"] < 1:
        raise ValueError("settings repeats and timed_steps must be >= 1")
    if s["device"] not in ("cuda", "cpu"):
        raise ValueError(f"setting device must be 'cuda' or 'cpu', got {s['device']!r}")
    if s["device"] == "cuda" and s["timed_steps"] < 50:
        raise ValueError(f"timed_steps must be >= 50 on a GPU, got {s['timed_steps']}")
    if s["backend"] not in ("auto", "triton", "torch"):
        raise ValueError(f"setting backend must be auto, triton or torch, got {s['backend']!r}")
    return s


def make_model(args: ModelArgs, device: torch.device, seed: int, backend: str = "auto", max_batch: int = 1,
               kernel_opts=None) -> tuple[Transformer, dict]:  # fmt: skip
    """Build, allocate caches and choose the backend. Returns (model, {weight_init_s, backend, ...})."""
    sync_device(device)
    t0 = time.perf_counter()
    m = build_model(args, device, seed)
    m.setup_caches(max_batch)
    sync_device(device)
    info = {"weight_init_s": time.perf_counter() - t0}
    reason = triton_unsupported_reason(args, device)
    if backend == "triton" and reason:
        raise Unsupported(f"triton backend: {reason}")
    use = "torch" if backend == "torch" or (backend == "auto" and reason) else "triton"
    if use == "triton":
        from .kernels import default_kernel_options

        m.set_backend("triton", kernel_opts or default_kernel_options(device))
        if device.type == "cuda" and kernel_opts is None:
            from .tuning import tuned_options

            # tile configs measured on this GPU model (cached after the first cell)
            info["tuning"] = tuned_options(m)
        info["kernel_options"] = m.kernel_opts.as_dict()
    info["backend"] = use
    if reason and use == "torch":
        info["backend_reason"] = reason
    return m, info


def _measure_startup(mode: str, args: ModelArgs, s: dict, device: torch.device) -> dict:
    return cold_start(_startup, mode, args, s, device)


def _startup(mode: str, args: ModelArgs, s: dict, device: torch.device) -> dict:
    t0 = time.perf_counter()
    model, info = make_model(args, device, s["seed"], s["backend"], max_batch=max(s["capture_sizes"]))
    # first decode step: Triton JIT compilation (the caches are empty), cuBLAS handles
    t1 = time.perf_counter()
    tok, pos, rows = _decode_inputs(model, 1, 0, device, s["seed"])
    with torch.inference_mode():
        model.decode(tok, pos, rows)
    sync_device(device)
    metrics = {"weight_init_s": info["weight_init_s"], "first_step_s": time.perf_counter() - t1}
    details = dict(info)
    if mode == "cudagraph":
        pool = CUDAGraphPool(model, s["capture_sizes"])
        pool.capture()
        summ = pool.summary()
        metrics.update(capture_s_total=summ["capture_s_total"], graph_memory_mb=summ["memory_mb_total"],
                       graphs_captured=float(len(pool.sizes)))  # fmt: skip
        details["capture"] = summ
    metrics["startup_s"] = time.perf_counter() - t0
    return {"metrics": metrics, "details": details}


def _measure_latency(mode, batch, args, input_len, output_len, s, device) -> dict:
    model, info = make_model(args, device, s["seed"], s["backend"], max_batch=batch)
    pool, metrics, details = None, {"weight_init_s": info["weight_init_s"]}, dict(info)
    if mode == "cudagraph":
        pool = CUDAGraphPool(model, s["capture_sizes"])
        t0 = time.perf_counter()
        pool.capture()
        summ = pool.summary()
        metrics.update(capture_s_total=time.perf_counter() - t0, graph_memory_mb=summ["memory_mb_total"])
        details["capture"] = summ
    out = latency_metrics(model, pool, batch, input_len, output_len, s)
    out["metrics"] = metrics | out["metrics"]
    out["details"] = details | out["details"]
    return out


@torch.inference_mode()  # the mode the pool's steps are timed in; the helpers run fn in the caller's mode
def latency_metrics(model: Transformer, pool: CUDAGraphPool | None, batch: int, input_len: int, output_len: int,
                    s: dict, copy_bw_gbps: float | None = None, profile: bool = True) -> dict:  # fmt: skip
    """All latency-cell metrics for one batch size: eager when pool is None, else through the pool
    (captured already). s: the checked settings. copy_bw_gbps: reuse a measured bandwidth.
    profile=False leaves out the profiler's kernel counts (kernel_metrics), for a caller that
    times several cells and profiles them all afterwards."""
    device = model.output.weight.device
    cuda = device.type == "cuda"
    args = model.args
    if batch > model.max_batch:
        raise ValueError(f"batch {batch} exceeds the cache rows set up ({model.max_batch})")
    mode = "eager" if pool is None else "cudagraph"
    details: dict = {"input_len": input_len, "output_len": output_len, "batch_size": batch, "mode": mode}
    metrics: dict = {}
    sizes = sorted(s["capture_sizes"]) if pool is None else pool.sizes
    padded = padded_size(batch, sizes) or batch  # above the largest graph: eager, unpadded
    metrics.update(padded_batch_size=float(padded), padding_waste_frac=padding_waste(batch, sizes) or 0.0)
    details["capture_sizes"] = sizes
    if pool is not None:
        details["runs_eager_fallback"] = pool.dispatch(batch) is None
    step = _step_fn(model, pool)

    # prefill once so the decode steps attend over a real context
    tokens = torch.randint(
        0, args.vocab_size, (batch, input_len), device=device, generator=seeded_generator(device, s["seed"])
    )
    prefill_ms(model, tokens)  # warm: the first prefill also compiles and tunes its kernels
    metrics["prefill_ms"] = statistics.median(prefill_ms(model, tokens) for _ in range(PREFILL_REPEATS))
    if pool is not None:
        tok, pos, rows = _decode_inputs(model, batch, input_len, device, s["seed"])
        details["graph_vs_eager"] = pool.compare_with_eager(tok, pos, rows)

    # the host, measured right before the timing: eager steps are read against its launch cost
    details["host"] = host_record(device)
    metrics.update(host_metrics(details["host"]))

    host_ms: list[float] = []

    def one_round():
        return decode_step_times(
            step, model, batch, input_len, s["warmup_steps"], s["timed_steps"], device, s["seed"], host_ms
        )

    # an eager cell on a GPU whose steps vary by more than 2% gets more rounds (host noise)
    t_measure = time.perf_counter()
    times, stab = timed_until_stable(one_round, adaptive=pool is None and cuda)
    metrics.update(step_metrics(times, stab, host_ms))
    details["timing"] = stab
    details["decode_context_len"] = mean_context(input_len, s["warmup_steps"], s["timed_steps"], args.max_seq_len)

    e2e = e2e_latencies(step, model, tokens, output_len, s["warmup_repeats"], s["repeats"])
    metrics.update(e2e_metrics(e2e, batch, output_len))
    details["e2e_latency_s"] = e2e
    metrics["measured_s"] = time.perf_counter() - t_measure  # the timed steps and runs (aggregate.measured_s)

    if cuda:
        ctx = int(details["decode_context_len"])
        tok, pos, rows = _decode_inputs(model, batch, ctx, device, s["seed"])
        # host-side timings first: once the profiler has run, CUPTI can slow every later launch
        enq = cpu_enqueue_ms(lambda: model.decode(tok, pos, rows))
        metrics["cpu_enqueue_ms_per_step"] = enq["median_ms"]
        details["cpu_enqueue"] = enq
        graph = pool.dispatch(batch) if pool is not None else None
        if graph is not None:
            metrics["gpu_ms_per_step"] = graph_gpu_ms(pool, tok, pos, rows)
            metrics["graph_enqueue_ms_per_step"] = cpu_enqueue_ms(lambda: pool.step(tok, pos, rows))["median_ms"]
            metrics["graph_replay_enqueue_ms"] = cpu_enqueue_ms(graph.graph.replay)["median_ms"]
        metrics.update(floor_metrics(args, batch, ctx, metrics["decode_step_ms_median"], device, copy_bw_gbps))
        if pool is not None:
            metrics["graph_over_floor"] = metrics["decode_step_over_floor"]
        details["device_name"] = torch.cuda.get_device_name(device)
        if profile:
            out = kernel_metrics(model, pool, batch, ctx, enq["median_ms"], s["seed"])
            metrics.update(out["metrics"])
            details.update(out["details"])
    return {"metrics": metrics, "details": details}


@torch.inference_mode()
def kernel_metrics(model: Transformer, pool: CUDAGraphPool | None, batch: int, ctx: int, enqueue_ms: float,
                   seed: int = 0) -> dict:  # fmt: skip
    """Profile one eager step (and one graph step): kernels per step, their summed GPU time,
    launch_us_per_kernel = the eager step's CPU enqueue time / its kernels, and (eager cells) the
    step's launch sequence for the launch-overhead model. Run after all timing."""
    tok, pos, rows = _decode_inputs(model, batch, ctx, model.output.weight.device, seed)
    out = step_profile(lambda: model.decode(tok, pos, rows), enqueue_ms, sequence=pool is None)
    if pool is not None and pool.dispatch(batch) is not None:
        out["details"]["kernels_in_graph_step"] = count_kernels(lambda: pool.step(tok, pos, rows))
    return out


def step_profile(fn, enqueue_ms: float | None, sequence: bool) -> dict:
    """{"metrics", "details"} of one profiled call of a step launched kernel by kernel: kernels per
    step, their GPU time, CPU µs per kernel (enqueue_ms measured without the profiler), and with
    sequence=True details["launches"] (see count_kernels)."""
    kern = count_kernels(fn, sequence=sequence)
    metrics = {"kernels_per_step": float(kern["kernels"]), "gpu_kernel_ms_per_step": kern["kernel_ms"]}
    if enqueue_ms is not None:
        metrics["launch_us_per_kernel"] = enqueue_ms * 1000 / max(kern["kernels"], 1)
    details = {"kernels": {k: v for k, v in kern.items() if k != "launches"}}
    if sequence:
        details["launches"] = kern["launches"]
    return {"metrics": metrics, "details": details}


def capture_sets(spec: list) -> dict[str, list[int]]:
    """The workload's capture_sets ([[1], [1, 4, 16], "1..256"]) as label -> sizes."""
    out = {}
    for item in spec:
        if isinstance(item, str):
            n = int(item.split("..", 1)[1])
            out[item] = list(range(1, n + 1))
        else:
            sizes = sorted(int(x) for x in item)
            out[",".join(map(str, sizes))] = sizes
    return out


def _measure_capture_study(args: ModelArgs, workload: dict, s: dict, device: torch.device) -> dict:
    if device.type != "cuda":
        raise Unsupported(NO_CUDA)
    sets = capture_sets(workload["capture_sets"])
    model, info = make_model(args, device, s["seed"], s["backend"], max_batch=max(max(v) for v in sets.values()))
    rows = capture_size_study(model, sets)
    metrics = {
        "capture_sets": float(len(rows)),
        "graph_memory_mb_max": max(r["graph_memory_mb"] for r in rows),
        "capture_s_total_max": max(r["capture_s_total"] for r in rows),
    }
    return {"metrics": metrics, "details": dict(info, capture_study=rows)}


def _measure_check(args: ModelArgs, workload: dict, s: dict, device: torch.device) -> dict:
    """Graph output vs eager at every captured size, at padded sizes and on the eager fallback;
    greedy decode through the graphs vs eagerly (token ids); the Triton kernels vs the torch
    path; all on fresh random inputs, each sequence at its own position."""
    if device.type != "cuda":
        raise Unsupported(NO_CUDA)
    sizes = validate_capture_sizes(s["capture_sizes"])
    fallback_n = sizes[-1] + 8
    model, info = make_model(args, device, s["seed"], s["backend"], max_batch=fallback_n)
    pool = CUDAGraphPool(model, sizes)
    pool.capture()
    gen = torch.Generator(device=device).manual_seed(s["seed"] + 10)
    V, S = args.vocab_size, args.max_seq_len
    input_len = int(workload["input_len"])

    def inputs(n):
        tok = torch.randint(0, V, (n,), device=device, generator=gen)
        pos = torch.randint(1, min(S, input_len + 1), (n,), device=device, generator=gen)  # one length each
        return tok, pos, torch.arange(n, device=device)

    checks: dict = {"captured": [pool.compare_with_eager(*inputs(n)) for n in sizes]}
    padded = sorted({n for n in (*PADDED_CHECK_SIZES, sizes[-1] - 1) if 1 <= n < sizes[-1] and n not in sizes})
    checks["padded"] = [pool.compare_with_eager(*inputs(n)) for n in padded]
    fallback = pool.compare_with_eager(*inputs(fallback_n))  # padded_size None: above the largest graph
    checks["fallback"] = [fallback | {"runs_eager": pool.dispatch(fallback_n) is None}]
    checks["scratch_row_untouched"] = _padded_rows_leave_cache(model, pool, padded[0] if padded else None, s["seed"])
    n_tokens = int(workload["greedy_tokens"])
    checks["greedy"] = [greedy_tokens_match(model, pool, bs, min(16, input_len), n_tokens, s["seed"])
                        for bs in sorted({1, 3, 4} & set(range(1, fallback_n + 1)))]  # fmt: skip
    if model.backend == "triton":
        checks["triton_vs_torch"] = []
        for bs in (1, 16):
            tok, pos, rows = inputs(bs)
            with torch.inference_mode():
                tri = model.decode(tok, pos, rows).clone()
                ref = model.decode_torch(tok, pos, rows)
            agree = float((ref.argmax(-1) == tri.argmax(-1)).float().mean())
            checks["triton_vs_torch"].append(compare(ref, tri) | {"n": bs, "argmax_agree": agree})
    graph_rows = checks["captured"] + checks["padded"] + checks["fallback"]
    results = {
        "graph_bit_equal": [r["bit_equal"] and r["finite"] for r in graph_rows],
        "greedy_identical": [r["identical"] for r in checks["greedy"]],
        "padded_rows_leave_cache": [checks["scratch_row_untouched"]["ok"]]
        if checks["scratch_row_untouched"] is not None
        else [],
    }
    total = sum(len(v) for v in results.values())
    failed = [f"{k}[{i}]" for k, v in results.items() for i, ok in enumerate(v) if not ok]
    metrics = {"checks_total": float(total), "checks_failed": float(len(failed)),
               "max_rel_err": max(r["rel_err"] for r in graph_rows)}  # fmt: skip
    details = dict(info, check=checks, capture_sizes=sizes, failed_checks=failed)
    if failed:
        raise CheckFailed(f"{len(failed)} of {total} checks failed: {', '.join(failed)}", details)
    return {"metrics": metrics, "details": details}


@torch.inference_mode()
def _padded_rows_leave_cache(model: Transformer, pool: CUDAGraphPool, n: int | None, seed: int) -> dict | None:
    """Run a padded graph for n real rows; the cache rows n.. (other sequences) must be unchanged."""
    if n is None:
        return None
    layer = model.layers[0].attention.kv_cache
    before = layer.k_cache.clone()
    tok, pos, rows = _decode_inputs(model, n, 1, model.output.weight.device, seed)
    pool.step(tok, pos, rows)
    torch.cuda.synchronize()
    after = layer.k_cache
    others = [r for r in range(before.shape[0]) if r >= n and r != model.scratch_row]
    same = bool(torch.equal(before[others], after[others])) if others else True
    return {"n": n, "padded_size": pool.padded_size(n), "rows_checked": len(others), "ok": same}


# ---------------------------------------------------------------- building blocks


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


COLD_CACHES = "fresh (cold start): empty Inductor and Triton caches of the cell's own"


@contextlib.contextmanager
def cold_compile_caches():
    """Run the block with empty Inductor and Triton compile caches (torch's fresh_cache: a new
    TORCHINDUCTOR_CACHE_DIR with TRITON_CACHE_DIR inside it, removed afterwards), so a startup cell
    measures a cold start whatever ran on the node before, as vLLM's startup cells do (a fresh
    VLLM_CACHE_ROOT). The graph pool's tile configs still come from its tuning cache (tuning.py): a
    measurement made once per GPU model, which the cell's details.tuning records as hit or miss.
    Entering it imports torch._inductor (torch._dynamo, sympy, Triton), so a start-up timed inside
    it counts from a process that has those loaded, as it has torch; before, the first model build
    paid for those imports (~1.3 s of the H200 cells' weight_init_s)."""
    from torch._inductor import utils

    fresh = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache  # the older name
    with fresh():
        yield


def cold_start(measure_cell, *args) -> dict:
    """A startup cell's {'metrics', 'details'}: measure_cell(*args) run under cold_compile_caches(),
    its details naming the caches (details.compile_cache)."""
    with cold_compile_caches():
        out = measure_cell(*args)
    out["details"]["compile_cache"] = COLD_CACHES
    return out


def _decode_inputs(model: Transformer, batch: int, pos: int, device, seed: int):
    """tokens, input_pos, rows [batch] for a decode step at position `pos` in rows 0..batch-1."""
    tok = torch.randint(0, model.args.vocab_size, (batch,), device=device, generator=seeded_generator(device, seed + 1))
    p = torch.full((batch,), pos, dtype=torch.long, device=device)
    return tok, p, torch.arange(batch, device=device)


def _step_fn(model: Transformer, pool: CUDAGraphPool | None):
    return model.decode if pool is None else pool.step


def decode_positions(input_len: int, n: int, max_seq: int) -> list[int]:
    """Positions of n decode steps after a prompt; wraps back to input_len at the cache end."""
    span = max_seq - input_len
    return [input_len + (i % span) for i in range(n)]


def mean_context(input_len, warmup, timed, max_seq) -> float:
    return statistics.fmean(p + 1 for p in decode_positions(input_len, warmup + timed, max_seq)[warmup:])


PREFILL_REPEATS = 3  # timed prefills after a warm one; prefill_ms is their median


@torch.inference_mode()
def prefill_ms(model: Transformer, tokens: torch.Tensor) -> float:
    """Eager prefill of tokens [B, T] into cache rows 0..B-1; milliseconds, device synced at both ends."""
    dev = tokens.device
    B, T = tokens.shape
    pos = torch.arange(T, device=dev)[None, :].expand(B, T)
    sync_device(dev)
    t0 = time.perf_counter()
    model(tokens, pos, None, last_only=True, prefill=True)
    sync_device(dev)
    return (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def decode_step_times(step, model: Transformer, batch: int, input_len: int, warmup: int, timed: int,
                      device: torch.device, seed: int, host_ms: list[float] | None = None) -> list[float]:  # fmt: skip
    """Milliseconds of each of `timed` decode steps (after `warmup`), one token per sequence.

    The host synchronises before each step, so every step starts on an idle GPU, as in a server
    that reads each step's sampled tokens. On CUDA each step is bracketed by events."""
    positions = decode_positions(input_len, warmup + timed, model.args.max_seq_len)
    pos_all = torch.tensor(positions, device=device)[:, None].expand(-1, batch).contiguous()  # [steps, B]
    tok = torch.randint(0, model.args.vocab_size, (batch,), device=device, generator=seeded_generator(device, seed + 2))
    rows = torch.arange(batch, device=device)
    for i in range(warmup):
        step(tok, pos_all[i], rows)
    return [step_ms(lambda i=i: step(tok, pos_all[i], rows), device, host_ms) for i in range(warmup, warmup + timed)]


def step_ms(fn, device: torch.device, host_ms: list[float] | None = None) -> float:
    """Milliseconds of one call of fn started on an idle device: CUDA events around it on a GPU,
    the host clock on the CPU. host_ms: append the host's time to issue the call (fn's return
    without waiting for the GPU: in an eager step that does not wait, its CPU enqueue time)."""
    sync_device(device)
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        ms = (time.perf_counter() - t0) * 1e3
        if host_ms is not None:
            host_ms.append(ms)
        return ms
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    end.record()
    end.synchronize()
    if host_ms is not None:
        host_ms.append((t1 - t0) * 1e3)
    return start.elapsed_time(end)


@torch.inference_mode()
def generate(step, model: Transformer, prompt: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Greedy decoding: prefill prompt [B, T] eagerly, then n_tokens - 1 decode steps through `step`.

    Each step's tokens are copied to the host (as a server must, to stream them and check stop
    conditions), so the host never runs ahead of the GPU. Returns tokens [B, n_tokens] on the host."""
    dev = prompt.device
    B, T = prompt.shape
    pos = torch.arange(T, device=dev)[None, :].expand(B, T)
    logits = model(prompt, pos, None, last_only=True, prefill=True)
    tok = logits.argmax(-1)
    rows = torch.arange(B, device=dev)
    out = [tok.cpu()]
    for i in range(n_tokens - 1):
        p = torch.full((B,), T + i, dtype=torch.long, device=dev)
        tok = step(tok, p, rows).argmax(-1)
        out.append(tok.cpu())
    return torch.stack(out, dim=1)


def e2e_latencies(step, model, prompt, output_len, warmup_repeats, repeats) -> list[float]:
    """Seconds per generate() of output_len tokens, after warmup_repeats untimed runs."""
    return seconds_per_run(lambda: generate(step, model, prompt, output_len), prompt.device, warmup_repeats, repeats)


def seconds_per_run(run, device: torch.device, warmup_repeats: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of run() (device synchronised at both ends), after
    warmup_repeats untimed calls."""
    for _ in range(warmup_repeats):
        run()
    out = []
    for _ in range(repeats):
        sync_device(device)
        t0 = time.perf_counter()
        run()
        sync_device(device)
        out.append(time.perf_counter() - t0)
    return out


def e2e_metrics(e2e: list[float], batch: int, output_len: int) -> dict:
    """End-to-end metrics of `batch` requests of output_len tokens from their run times (s)."""
    mean = statistics.fmean(e2e)
    return {"e2e_latency_s_mean": mean, "e2e_latency_s_median": quantile(e2e, 0.5),
            "e2e_latency_s_p90": quantile(e2e, 0.9), "output_tokens_per_s": batch * output_len / mean,
            "ms_per_output_token": mean * 1000 / output_len}  # fmt: skip


def floor_metrics(args: ModelArgs, batch: int, context_len: float, step_ms_: float, device: torch.device,
                  copy_bw_gbps: float | None = None) -> dict:  # fmt: skip
    """The step's HBM floor (bytes it must move over the measured copy bandwidth) and the
    measured step over it. copy_bw_gbps: reuse a bandwidth measured before."""
    bw = copy_bw_gbps or copy_bandwidth_gbps(device)
    nbytes = bytes_per_step(args, batch, context_len)
    floor = nbytes / (bw * 1e9) * 1e3
    return {"copy_bandwidth_gbps": bw, "hbm_floor_ms": floor, "bytes_per_step_gb": nbytes / 1e9,
            "decode_step_over_floor": step_ms_ / floor}  # fmt: skip


def count_kernels(fn, sequence: bool = False) -> dict:
    """Profile one call of fn (after one warm call): CUDA kernels launched, their summed device time,
    memcpy/memset count, and kernel names with counts.

    sequence=True adds "launches": every device op of the call in issue order with its device time
    (gpu_us), its kind ("runtime": launched through the CUDA runtime, as ATen does;
    "driver": through the driver API, as Triton, cuBLAS's nvjet GEMMs and cuDNN do; "memop"), a name index into "names", the
    host time its launch call started (issue_us, from the start of the call; None where the
    profiler does not trace the call: the driver API's), and profiled_call_ms, the host time of the
    whole call under the profiler (whose callbacks slow every launch)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function(STEP_MARK):
            fn()
        torch.cuda.synchronize()
    out = kernel_summary((e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA)
    if sequence:
        out.update(launch_sequence(list(prof.profiler.kineto_results.events())))
    return out


def kernel_summary(device_events) -> dict:
    """count_kernels' summary of a profiled call's device events, given as (name, µs) pairs: the
    step marker's device-side annotation is not a kernel; memcpy / memset are counted apart."""
    names: Counter = Counter()
    us_by_name: Counter = Counter()
    memops = 0
    for name, us in device_events:
        if name == STEP_MARK:
            continue
        if name.startswith(("Memcpy", "Memset")):
            memops += 1
            continue
        names[short_name(name)] += 1
        us_by_name[short_name(name)] += us
    return {
        "kernels": sum(names.values()),
        "memops": memops,
        "kernel_ms": sum(us_by_name.values()) / 1e3,
        "by_name": dict(names.most_common()),
        "ms_by_name": {k: v / 1e3 for k, v in us_by_name.most_common()},
    }


def _annotation(e) -> bool:
    is_annotation = getattr(e, "is_user_annotation", None)
    return bool(is_annotation()) if callable(is_annotation) else False


def _host_wait(e) -> bool:
    from torch.autograd import DeviceType

    return e.device_type() == DeviceType.CPU and waits_for_gpu(e.name())


def _inside(e, mark) -> bool:
    """Whether event e ran within the step marker (False without a marker)."""
    return mark is not None and mark.start_ns() <= e.start_ns() <= mark.start_ns() + mark.duration_ns()


def launch_sequence(events) -> dict:
    """The "launches" record of count_kernels from the profiler's kineto events (see there).

    Device ops are in GPU start order (one stream: the order they were issued). The profiler
    traces the CUDA runtime's launch calls (cudaLaunchKernel*, cudaMemcpy*: ATen) and, on the
    H200, cuBLAS's and cuDNN's driver-API ones (cuLaunchKernel*), but not those of Triton's
    launcher: a kernel without a traced call is of kind "driver" and has no issue time (None)."""
    from torch.autograd import DeviceType

    mark = next((e for e in events if e.name() == STEP_MARK and e.device_type() == DeviceType.CPU), None)
    # the step marker also shows on the device (a user annotation there): not a device op
    device_ops = [
        e for e in events if e.device_type() == DeviceType.CUDA and e.name() != STEP_MARK and not _annotation(e)
    ]
    calls = {
        e.linked_correlation_id(): e
        for e in events
        if e.device_type() == DeviceType.CPU and e.name().startswith(LAUNCH_APIS) and e.linked_correlation_id() > 0
    }
    ops = []
    for e in sorted(device_ops, key=lambda e: e.start_ns()):
        call = calls.get(e.linked_correlation_id())
        issue_us = (call.start_ns() - mark.start_ns()) / 1e3 if call is not None and mark is not None else None
        ops.append((e.name(), e.name().startswith(("Memcpy", "Memset")), call.name() if call is not None else None,
                    issue_us, e.duration_ns() / 1e3))  # fmt: skip
    # host calls inside the step that can wait for the GPU: an eager step that makes one is not
    # launch-bound however slow its host side, and its CPU enqueue time cannot be measured
    waits = {e.name() for e in events if _host_wait(e) and _inside(e, mark)}
    return {"launches": launch_record(ops, mark.duration_ns() / 1e6 if mark is not None else None, waits)}


_SLEEP_CYCLES_PER_MS: dict[int, float] = {}


def _busy(ms: float) -> None:
    """Keep the current stream busy for about `ms` milliseconds."""
    dev = torch.cuda.current_device()
    if dev not in _SLEEP_CYCLES_PER_MS:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1_000_000)
        a.record()
        torch.cuda._sleep(10_000_000)
        b.record()
        b.synchronize()
        _SLEEP_CYCLES_PER_MS[dev] = 10_000_000 / a.elapsed_time(b)
    torch.cuda._sleep(int(ms * _SLEEP_CYCLES_PER_MS[dev]))


def cpu_enqueue_ms(fn, reps: int = 10) -> dict:
    """Host milliseconds to enqueue one call of fn while the GPU is busy with an earlier sleep kernel
    (so no launch waits for the GPU). Valid reps are those where the sleep outlasted the enqueue."""
    fn()
    torch.cuda.synchronize()
    times, valid = [], 0
    busy_ms = 50.0
    for _ in range(reps):
        _busy(busy_ms)
        done = torch.cuda.Event()
        done.record()
        t0 = time.perf_counter()
        fn()
        t = (time.perf_counter() - t0) * 1e3
        busy_still = not done.query()
        torch.cuda.synchronize()
        if busy_still:
            valid += 1
            times.append(t)
        else:
            busy_ms *= 2
    if not times:
        raise RuntimeError(
            f"the host never finished enqueueing a call before the GPU went idle (kept busy for up to "
            f"{busy_ms / 2:.0f} ms): the call waits for the GPU, or it issues more launches than the "
            "driver queues ahead of a busy GPU; cpu_enqueue_ms is not measurable"
        )
    return {"median_ms": statistics.median(times), "min_ms": min(times), "valid_reps": valid, "reps": reps}


def graph_gpu_ms(pool: CUDAGraphPool, tok, pos, rows, n: int = 50) -> float:
    """GPU milliseconds per step from n back-to-back replays (the host runs ahead; no gaps)."""
    return back_to_back_ms(lambda: pool.step(tok, pos, rows), n)


def back_to_back_ms(fn, n: int = 50) -> float:
    """Milliseconds per call of fn over n calls issued back to back (no sync between them): the
    GPU's time per step wherever the host enqueues a step faster than the GPU runs it."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / n


def copy_bandwidth_gbps(device: torch.device, nbytes: int = 2 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (median)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    del src, dst
    return 2 * nbytes / (statistics.median(times) * 1e-3) / 1e9


def bytes_per_step(args: ModelArgs, batch: int, context_len: float) -> float:
    """Bytes one decode step must move: every matmul weight and norm weight once, the embedding rows of
    the batch, and per sequence the K/V of `context_len` positions read plus one position written."""
    e = torch.empty(0, dtype=args.torch_dtype).element_size()
    d, layers = args.hidden_size, args.n_layers
    per_layer = d * args.qkv_dim + args.n_heads * args.head_dim * d + 3 * d * args.intermediate_size + 2 * d
    weights = layers * per_layer + d * args.vocab_size + d + batch * d
    kv_per_pos = layers * 2 * args.n_kv_heads * args.head_dim
    return float(e * (weights + batch * kv_per_pos * (context_len + 1)))


def capture_size_study(model: Transformer, sets: dict[str, list[int]]) -> list[dict]:
    """For each capture set: a fresh pool captured, its total memory and capture time; freed after."""
    out = []
    for label, sizes in sets.items():
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free0 = torch.cuda.mem_get_info()[0]
        t0 = time.perf_counter()
        pool = CUDAGraphPool(model, sizes)
        pool.capture()
        wall = time.perf_counter() - t0
        torch.cuda.synchronize()
        free1 = torch.cuda.mem_get_info()[0]
        summ = pool.summary()
        out.append({
            "set": label, "sizes": sizes if len(sizes) <= 16 else [sizes[0], sizes[-1]], "n_graphs": len(sizes),
            "graph_memory_mb": summ["memory_mb_total"], "device_memory_mb": (free0 - free1) / 2**20,
            "static_io_mb": summ["static_io_mb"], "capture_s_total": wall,
            "capture_s_graphs_only": sum(g["capture_s"] for g in summ["per_size"]),
            "per_size": summ["per_size"] if len(sizes) <= 16 else None,
        })  # fmt: skip
        del pool
    gc.collect()
    torch.cuda.empty_cache()
    return out


def greedy_tokens_match(model: Transformer, pool: CUDAGraphPool, batch: int, prompt_len: int, n_tokens: int,
                        seed: int) -> dict:  # fmt: skip
    """Greedy-decode the same prompts eagerly and through the pool; compare the token ids."""
    dev = model.output.weight.device
    prompt = torch.randint(
        0, model.args.vocab_size, (batch, prompt_len), device=dev, generator=seeded_generator(dev, seed + 3)
    )
    eager = generate(model.decode, model, prompt, n_tokens)
    graph = generate(pool.step, model, prompt, n_tokens)
    return {"batch": batch, "n_tokens": n_tokens, "identical": bool(torch.equal(eager, graph)),
            "first_mismatch_step": _first_mismatch(eager, graph)}  # fmt: skip


def _first_mismatch(a: torch.Tensor, b: torch.Tensor) -> int | None:
    bad = (a != b).any(dim=0).nonzero()
    return int(bad[0]) if bad.numel() else None


__all__ = [
    "measure",
    "compare",
    "capture_size_study",
    "greedy_tokens_match",
    "capture_sets",
    "CheckFailed",
    "Unsupported",
]
