"""Tile configs of the pool's Triton kernels: measured once per GPU model and model shape, cached.

`tuned_options(model)` returns the kernel options a cell runs with and a record of where its
tile configs came from. The first cell on a GPU model times each candidate config of every
matmul shape of the model (split-K ones included), races the M == 1 choice between the GEMV and
the tensor-core kernel again in the whole batch-1 step, and times decode attention's splits and
blocks per batch size; it keeps the fastest and writes them to a JSON cache file (the matmuls of
Llama-3.1-8B took about 70 s on an H200, before the step race and attention were added); every
later cell on the same GPU model, Triton and torch version reads them back. The cache lives in
$CGB_CACHE_DIR, else $XDG_CACHE_HOME/cudagraph-bench, else ~/.cache/cudagraph-bench: on a
cluster the home directory is shared, so one tuning serves every node with that GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from .model import Transformer

CACHE_FORMAT = 6  # 2: configs may carry SPLIT_K; 3: the M == 1 kernel is chosen in the whole step; 4: attention;
# 5: eight-way split-K candidates; 6: the tensor-core kernel's norm from x @ x^T (every timing changed)

# bucket (BLOCK_M used) -> candidate (BLOCK_N, BLOCK_K, num_warps, num_stages[, SPLIT_K]); bucket 1 is
# the GEMV. Split-K candidates let a matmul with few output tiles (qkv, o, down) fill every SM with
# wide tiles; they are tried only where the unsplit grid is small (split_k_useful).
CANDIDATES = {
    1: [(4, 1024, 4, 1), (8, 512, 4, 1), (8, 1024, 4, 1), (16, 512, 4, 1), (16, 256, 4, 1), (32, 256, 8, 1),
        (8, 512, 4, 1, 2), (16, 512, 4, 1, 2), (16, 512, 4, 1, 4), (32, 256, 8, 1, 4)],
    16: [(16, 256, 4, 4), (16, 128, 4, 6), (32, 256, 4, 4), (32, 128, 4, 5), (64, 128, 4, 4), (128, 64, 4, 4),
         (64, 128, 4, 4, 2), (64, 128, 4, 4, 4), (128, 128, 8, 3, 2), (128, 128, 8, 3, 4), (32, 256, 4, 4, 2),
         (32, 256, 4, 4, 4), (16, 256, 4, 4, 4), (64, 128, 4, 4, 8), (32, 256, 4, 4, 8), (32, 128, 4, 5, 8)],
    64: [(16, 128, 4, 4), (32, 128, 4, 4), (32, 64, 4, 6), (64, 64, 4, 5), (128, 64, 8, 4),
         (64, 128, 4, 3, 2), (64, 64, 4, 5, 2), (64, 64, 4, 5, 4), (128, 64, 8, 4, 2), (128, 64, 8, 4, 4),
         (32, 128, 4, 4, 2), (128, 64, 8, 3, 2), (64, 128, 4, 3, 4), (64, 64, 4, 5, 8)],
}  # fmt: skip


# Decode attention: tuned per batch size (the pool's graph sizes are powers of two) at one context
# length, the latency workload's (256 prompt tokens plus half its 64 outputs).
ATTN_BATCHES = (1, 2, 4, 8, 16, 32, 64)
ATTN_CONTEXT = 288
# candidate (num_splits, BLOCK_S, num_warps, num_stages); splits whose slice is shorter than BLOCK_S are skipped
ATTN_CANDIDATES = [(sp, bs, w, st) for sp in (1, 2, 4, 8, 16) for bs in (32, 64) for w, st in ((4, 2), (4, 3), (8, 2))]


def split_k_useful(N: int, cfg: tuple, n_sms: int) -> bool:
    """A split-K candidate is worth timing only where the unsplit grid has under ~4 tiles per SM."""
    from .kernels import config_split

    return config_split(cfg) == 1 or -(-N // cfg[0]) < 4 * n_sms


BUCKETS = (16, 1, 64)  # 16 first: at M == 1 the GEMV's best is raced against bucket 16's


def cache_dir() -> Path:
    if os.environ.get("CGB_CACHE_DIR"):
        return Path(os.environ["CGB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cudagraph-bench"


def matmul_shapes(model: Transformer) -> list[dict]:
    """The decode step's matmuls: name, N (output rows), K, and the fused epilogue."""
    a = model.args
    d = a.hidden_size
    return [
        {"name": "qkv", "N": a.qkv_dim, "K": d, "kw": {"norm": True}},
        {"name": "o", "N": d, "K": a.n_heads * a.head_dim, "kw": {"residual": True}},
        {"name": "gate_up", "N": a.intermediate_size, "K": d, "kw": {"norm": True, "silu_mul": True}},
        {"name": "down", "N": d, "K": a.intermediate_size, "kw": {"residual": True}},
        {"name": "lm_head", "N": a.vocab_size, "K": d, "kw": {"norm": True, "fp32": True}},
    ]


def cache_key(model: Transformer) -> dict:
    """What a cached tuning is valid for: the GPU model, the software, the shapes and the launch options."""
    dev = model.output.weight.device
    props = torch.cuda.get_device_properties(dev)
    shapes = [(s["N"], s["K"]) for s in matmul_shapes(model)]
    opts = model.kernel_opts
    a = model.args
    return {
        "format": CACHE_FORMAT,
        "gpu_name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "triton": _triton_version(),
        "torch": torch.__version__,
        "dtype": str(model.args.torch_dtype).removeprefix("torch."),
        "shapes": shapes,
        "attention": {
            "heads": [a.n_heads, a.n_kv_heads, a.head_dim],
            "cache_positions": a.max_seq_len,
            "batches": list(ATTN_BATCHES),
            "context": ATTN_CONTEXT,
        },  # fmt: skip
        "launch": {
            "pdl": opts.pdl,
            "pdl_late": opts.pdl_late,
            "prefetch_mb": opts.prefetch_mb,
            "gemv_m1": opts.gemv_m1,
            "attn_prefetch_mb": opts.attn_prefetch_mb,
        },
    }


def cache_path(key: dict, folder: Path | None = None) -> Path:
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", key["gpu_name"]).strip("_").lower() or "gpu"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return (folder or cache_dir()) / "tiles" / f"{gpu}-{digest}.json"


def tuned_options(model: Transformer, folder: Path | None = None) -> dict:
    """Install tuned tile configs into model.kernel_opts (Triton backend on CUDA); returns the record
    {"cache_file", "cache_hit", "tune_s", "chosen", "key"} that the cell's result keeps."""
    key, path = _key_and_file(model, folder)
    try:
        doc = json.loads(path.read_text())
        hit = doc.get("key") == key
    except (OSError, json.JSONDecodeError):
        doc, hit = None, False
    t0 = time.perf_counter()
    if hit:
        configs = {_parse_key(k): (tuple(v) if v is not None else None) for k, v in doc["linear_configs"].items()}
        attn = {int(b): tuple(v) for b, v in doc["attn_configs"].items()}
        chosen = doc["chosen"]
    else:
        configs, chosen = tune(model)
        attn, chosen_attn = tune_attention(model)
        chosen = {**chosen, **chosen_attn}
        doc = _write_cache(path, key, configs, attn, chosen, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    model.kernel_opts.linear_configs = configs
    model.kernel_opts.attn_configs = attn
    return {
        "cache_file": str(path),
        "cache_hit": hit,
        "tune_s": None if hit else time.perf_counter() - t0,
        "tuned_utc": doc.get("tuned_utc"),
        "chosen": chosen,
    }


def seed_cache(model: Transformer, record: dict, folder: Path | None = None) -> Path:
    """Write this machine's cache file from a result file's tuning record (details.tuning), so the
    cells here reuse a tuning measured on another machine of the same GPU model and software, as
    later cells on one machine do. Refused unless the record's cache file has the name this
    machine's key gives (the name is a digest of the key: GPU, software, shapes, launch options,
    cache format). Returns the path written."""
    key, path = _key_and_file(model, folder)
    recorded = Path(record["cache_file"]).name
    if path.name != recorded:
        raise ValueError(f"the record's tuning is for another key ({recorded}; this machine: {path.name})")
    names = {s["name"]: (s["N"], s["K"]) for s in matmul_shapes(model)}
    configs, attn = {}, {}
    for k, v in record["chosen"].items():
        name, bucket = k.split("@")
        if name == "attention":
            attn[int(bucket)] = v["cfg"]
        else:
            configs[(int(bucket), *names[name])] = v["cfg"]
    _write_cache(path, key, configs, attn, record["chosen"], record.get("tuned_utc"))
    return path


def _key_and_file(model: Transformer, folder: Path | None) -> tuple[dict, Path]:
    """The model's cache key as the cache file holds it (lists, not tuples) and that file's path."""
    key = json.loads(json.dumps(cache_key(model)))
    return key, cache_path(key, folder)


def _write_cache(path: Path, key: dict, configs: dict, attn: dict, chosen: dict, tuned_utc: str | None) -> dict:
    """Write the cache file (the layout tuned_options reads back); returns its document."""
    doc = {
        "key": key,
        "linear_configs": {str(list(k)): v for k, v in sorted(configs.items())},
        "attn_configs": {str(b): list(v) for b, v in sorted(attn.items())},
        "chosen": chosen,
        "tuned_utc": tuned_utc,
    }
    _write_json(path, doc)
    return doc


def _parse_key(text: str) -> tuple:
    return tuple(json.loads(text))


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:  # pragma: no cover - the Triton backend needs it
        return None


def _write_json(path: Path, doc: dict) -> None:
    from cudagraph_bench.results import write_atomic

    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _time_graph(fn, reps: int) -> float:
    """ms per call of fn(i), from one CUDA graph holding `reps` calls (median of 5 replays)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(0)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return statistics.median(times)


def _time_candidate(call, reps: int, cfg: tuple, tried: dict) -> float | None:
    """ms per call of one candidate config, recorded in `tried` (µs, or why it could not run)."""
    try:
        ms = _time_graph(call, reps=reps)
    except Exception as e:  # noqa: BLE001 - a config that does not compile or fit is skipped
        tried[str(list(cfg))] = f"{type(e).__name__}: {str(e)[:200]}"
        return None
    tried[str(list(cfg))] = round(ms * 1e3, 2)
    return ms


@torch.inference_mode()
def tune(model: Transformer) -> tuple[dict, dict]:
    """Time every candidate tile config per matmul shape and bucket; return (linear_configs, chosen).

    Weights rotate over several copies so that no timing is served from L2. At M == 1 the GEMV's
    best is also raced against the tensor-core kernel (bucket 16's best); None records that the
    tensor-core kernel won."""
    from . import kernels as K

    dev, dt = model.output.weight.device, model.args.torch_dtype
    eps = model.args.norm_eps
    gemv_opts = replace(model.kernel_opts, gemv_m1=True, linear_configs={})
    dot_opts = replace(model.kernel_opts, gemv_m1=False, linear_configs=gemv_opts.linear_configs)
    chosen: dict = {}
    m1_options: dict = {}  # (1, N, K) -> [GEMV's best config, None]: raced again in the whole step
    for sh in matmul_shapes(model):
        N, Kd, kw = sh["N"], sh["K"], sh["kw"]
        rows = 2 * N if kw.get("silu_mul") else N
        wbytes = rows * Kd * torch.empty(0, dtype=dt).element_size()
        copies = max(1, min(8, (256 << 20) // wbytes))
        ws = [torch.randn(rows, Kd, device=dev, dtype=dt) / Kd**0.5 for _ in range(copies)]
        for bm in BUCKETS:
            opts = gemv_opts if bm == 1 else dot_opts
            x = torch.randn(bm, Kd, device=dev, dtype=dt)
            res = torch.randn(bm, N, device=dev, dtype=dt)
            out = torch.empty(bm, N, device=dev, dtype=torch.float32 if kw.get("fp32") else dt)

            def call(i, ws=ws, x=x, res=res, out=out, kw=kw, opts=opts):
                K.linear(x, ws[i % len(ws)], opts, rms_norm=kw.get("norm", False), eps=eps,
                         residual=res if kw.get("residual") else None, silu_mul=kw.get("silu_mul", False),
                         out=out)  # fmt: skip

            best = None
            tried: dict[str, float | str] = {}  # every candidate's us per call (or why it could not run)
            for cfg in CANDIDATES[bm]:
                if not K.fits_k(Kd, cfg) or not split_k_useful(N, cfg, K._num_sms(dev)):
                    continue
                opts.linear_configs[(bm, N, Kd)] = cfg
                ms = _time_candidate(call, max(8, copies * 2), cfg, tried)
                if ms is not None and (best is None or ms < best[0]):
                    best = (ms, cfg)
            if best and bm == 1 and (16, N, Kd) in dot_opts.linear_configs:
                opts.linear_configs[(1, N, Kd)] = None  # the tensor-core kernel at M == 1

                def call1(i, ws=ws, x1=x[:1], r1=res[:1], o1=out[:1], kw=kw):
                    K.linear(x1, ws[i % len(ws)], gemv_opts, rms_norm=kw.get("norm", False), eps=eps,
                             residual=r1 if kw.get("residual") else None, silu_mul=kw.get("silu_mul", False),
                             out=o1)  # fmt: skip

                ms = _time_graph(call1, reps=max(8, copies * 2))
                tried["tensor-core kernel, bucket 16's best"] = round(ms * 1e3, 2)
                m1_options[(1, N, Kd)] = [best[1], None]
                if ms < best[0]:
                    best = (ms, None)
            if best:
                opts.linear_configs[(bm, N, Kd)] = best[1]
                chosen[f"{sh['name']}@{bm}"] = {"cfg": best[1], "us": best[0] * 1e3,
                                                "weight_gbps": wbytes / (best[0] * 1e-3) / 1e9, "tried": tried}  # fmt: skip
            else:
                opts.linear_configs.pop((bm, N, Kd), None)
        del ws
    torch.cuda.synchronize()
    names = {(1, sh["N"], sh["K"]): f"{sh['name']}@1" for sh in matmul_shapes(model)}
    step = _decode_step_timer(model, replace(model.kernel_opts, linear_configs=gemv_opts.linear_configs))
    for key, picked in race_in_step(gemv_opts.linear_configs, m1_options, step).items():
        chosen[names[key]].update(cfg=picked["cfg"], in_step_ms=picked["in_step_ms"])
    return dict(gemv_opts.linear_configs), chosen


@torch.inference_mode()
def tune_attention(model: Transformer) -> tuple[dict, dict]:
    """Time every decode-attention candidate at each batch size of ATTN_BATCHES, ATTN_CONTEXT
    positions cached; return ({batch: config}, chosen). The caches rotate over copies so that
    no timing is served from L2 (in the step, every layer reads its own cache)."""
    from . import kernels as K

    a, dev, dt = model.args, model.output.weight.device, model.args.torch_dtype
    S = a.max_seq_len
    ctx = min(ATTN_CONTEXT, S - 1)
    configs, chosen = {}, {}
    for B in ATTN_BATCHES:
        touched = B * ctx * a.n_kv_heads * a.head_dim * 2 * torch.empty(0, dtype=dt).element_size()
        copies = max(2, min(64, -(-(256 << 20) // touched)))
        caches = [(torch.randn(B + 1, S, a.n_kv_heads, a.head_dim, device=dev, dtype=dt),
                   torch.randn(B + 1, S, a.n_kv_heads, a.head_dim, device=dev, dtype=dt)) for _ in range(copies)]  # fmt: skip
        qkv = torch.randn(B, a.qkv_dim, device=dev, dtype=dt)
        pos = torch.full((B,), ctx, dtype=torch.long, device=dev)
        rows = torch.arange(B, device=dev)
        opts = replace(model.kernel_opts, attn_configs={})
        tried: dict[str, float | str] = {}
        best = None
        for cfg in ATTN_CANDIDATES:
            splits, block_s = cfg[0], cfg[1]
            if splits > 1 and -(-S // splits) < block_s:
                continue
            opts.attn_configs[B] = cfg

            def call(i, opts=opts, caches=caches, qkv=qkv, pos=pos, rows=rows):
                kc, vc = caches[i % len(caches)]
                K.decode_attention(
                    qkv, pos, rows, model.rope_cos, model.rope_sin, kc, vc, a.n_heads, a.n_kv_heads, opts
                )

            ms = _time_candidate(call, max(16, copies), cfg, tried)
            if ms is not None and (best is None or ms < best[0]):
                best = (ms, cfg)
        if best:
            configs[B] = best[1]
            chosen[f"attention@{B}"] = {"cfg": best[1], "us": best[0] * 1e3,
                                        "kv_gbps": touched / (best[0] * 1e-3) / 1e9, "tried": tried}  # fmt: skip
        del caches
    torch.cuda.synchronize()
    return configs, chosen


def race_in_step(configs: dict, options: dict, step_ms) -> dict:
    """Choose each matmul's M == 1 kernel by the whole decode step's time, one matmul at a time.

    Timed alone, a matmul repeated back to back can favour a kernel that loses in the step,
    where it follows and precedes other kernels (on the H200 the tensor-core gate_up at M == 1
    beat the GEMV alone by 5% while the step with it took 0.7 ms longer). configs: the tuned
    configs, updated in place; options: key -> candidate configs; step_ms(): the step's time
    with `configs` as they stand. Returns key -> {"cfg", "in_step_ms": {candidate: ms}}."""
    out = {}
    for key, cands in options.items():
        times = {}
        for cfg in cands:
            configs[key] = cfg
            times[cfg] = step_ms()
        best = min(times, key=times.get)
        configs[key] = best
        out[key] = {"cfg": best, "in_step_ms": {str(list(c)) if c else "tensor-core": round(t, 4)
                                                for c, t in times.items()}}  # fmt: skip
    return out


def _decode_step_timer(model: Transformer, opts):
    """ms of one batch-1 decode step of `model` run with `opts` (a CUDA graph of a few steps)."""
    dev = model.output.weight.device
    tok = torch.zeros(1, dtype=torch.long, device=dev)
    pos = torch.full((1,), min(256, model.args.max_seq_len - 1), dtype=torch.long, device=dev)
    rows = torch.zeros(1, dtype=torch.long, device=dev)
    saved = model.kernel_opts

    def time_it() -> float:
        model.kernel_opts = opts
        try:
            return _time_graph(lambda i: model.decode(tok, pos, rows), reps=4)
        finally:
            model.kernel_opts = saved

    return time_it
