"""The torch.compile peer: a plain gpt-fast-style Llama, in the three ways a PyTorch user would run it.

Modes (cell modes):
- ``eager``: the module as written, no compilation.
- ``compile_nograph``: the decode step under ``torch.compile(fullgraph=True)`` (Inductor's fused
  Triton kernels, launched one by one): what fusion buys without graphs.
- ``cudagraph``: ``torch.compile(mode="reduce-overhead", fullgraph=True)``: the same kernels
  replayed from a CUDA graph (torch's CUDA-graph trees): what graphs add on top.

The model is what gpt-fast writes, not the pool's code: an ``nn.Module`` whose KV cache is a
pair of buffers ``[B, H_kv, S, D]`` updated with ``index_copy_``, ``F.rms_norm``, RoPE,
``scaled_dot_product_attention`` over the whole cache window with a causal mask, cuBLAS linears
(fused QKV; separate gate, up and down projections). One departure, for speed: grouped-query
attention reads each cached K and V once (``grouped_attention``) where gpt-fast copies them per
query head. Every sequence of a batch is at the same
position, as in ``vllm bench latency``. Weights are random (seeded) of the configured shape; the
compile time belongs to the startup cell (and is recorded in every cell). The startup cell
compiles with empty Inductor and Triton caches (a cold start, as vLLM's startup cells); other
cells use whatever caches the node holds, which changes their compile time, not their steps.
"""

from __future__ import annotations

import math
import time
from typing import TextIO

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cells import BACKEND_KINDS, BACKEND_MODES
from ..errors import Unsupported
from ..host import host_metrics, host_record, step_metrics, timed_until_stable
from .graph_pool.measure import (
    back_to_back_ms,
    cold_start,
    count_kernels,
    cpu_enqueue_ms,
    decode_positions,
    e2e_metrics,
    floor_metrics,
    mean_context,
    say,
    seconds_per_run,
    seeded_generator,
    step_ms,
    step_profile,
    sync_device,
)
from .graph_pool.model import ModelArgs, rope_tables

MODES = BACKEND_MODES["torch_compile"]
KINDS = BACKEND_KINDS["torch_compile"]
_COMPILE = {"compile_nograph": {}, "cudagraph": {"mode": "reduce-overhead"}}


class KVCache(nn.Module):
    def __init__(self, batch: int, max_seq: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """input_pos [T]; k, v [B, H_kv, T, D]: write the positions, return the whole cache."""
        self.k_cache.index_copy_(2, input_pos, k)
        self.v_cache.index_copy_(2, input_pos, v)
        return self.k_cache, self.v_cache


class Attention(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        dt = a.torch_dtype
        self.n_heads, self.n_kv_heads, self.head_dim = a.n_heads, a.n_kv_heads, a.head_dim
        self.wqkv = nn.Linear(a.hidden_size, a.qkv_dim, bias=False, dtype=dt)
        self.wo = nn.Linear(a.n_heads * a.head_dim, a.hidden_size, bias=False, dtype=dt)
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, mask, input_pos):
        B, T, _ = x.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = _rope(q.view(B, T, self.n_heads, self.head_dim), cos, sin).transpose(1, 2)
        k = _rope(k.view(B, T, self.n_kv_heads, self.head_dim), cos, sin).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv_cache.update(input_pos, k, v)
        y = grouped_attention(q, k, v, mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, q_size))


class FeedForward(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        dt = a.torch_dtype
        self.w1 = nn.Linear(a.hidden_size, a.intermediate_size, bias=False, dtype=dt)
        self.w3 = nn.Linear(a.hidden_size, a.intermediate_size, bias=False, dtype=dt)
        self.w2 = nn.Linear(a.intermediate_size, a.hidden_size, bias=False, dtype=dt)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.attention, self.feed_forward = Attention(a), FeedForward(a)
        self.attention_norm = nn.Parameter(torch.ones(a.hidden_size, dtype=a.torch_dtype))
        self.ffn_norm = nn.Parameter(torch.ones(a.hidden_size, dtype=a.torch_dtype))
        self.eps = a.norm_eps

    def forward(self, x, cos, sin, mask, input_pos):
        d = x.shape[-1]
        h = x + self.attention(F.rms_norm(x, (d,), self.attention_norm, self.eps), cos, sin, mask, input_pos)
        return h + self.feed_forward(F.rms_norm(h, (d,), self.ffn_norm, self.eps))


class Llama(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        self.tok_embeddings = nn.Embedding(a.vocab_size, a.hidden_size, dtype=a.torch_dtype)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = nn.Parameter(torch.ones(a.hidden_size, dtype=a.torch_dtype))
        self.output = nn.Linear(a.hidden_size, a.vocab_size, bias=False, dtype=a.torch_dtype)
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.register_buffer("causal_mask", torch.empty(0, dtype=torch.bool), persistent=False)

    def setup_caches(self, batch: int, cache_len: int | None = None) -> None:
        """KV cache of cache_len positions (default: the model's max_seq_len); attention reads all of them."""
        a, dev = self.args, self.output.weight.device
        n = cache_len or a.max_seq_len
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(batch, n, a.n_kv_heads, a.head_dim, a.torch_dtype).to(dev)
        cos, sin = rope_tables(n, a.head_dim, a.rope_theta, a.rope_scaling)
        self.rope_cos, self.rope_sin = cos.to(dev), sin.to(dev)
        self.causal_mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=dev))

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] at positions input_pos [T] -> logits [B, T, V] (float32)."""
        mask = self.causal_mask[None, None, input_pos]
        cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, input_pos)
        x = F.rms_norm(x, (x.shape[-1],), self.norm, self.args.norm_eps)
        return self.output(x).float()


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention: q [B, H, T, D], k and v [B, H_kv, S, D] (each kv head serving `rep`
    = H / H_kv consecutive query heads), mask [1, 1, T, S] -> [B, H, T, D].

    The rep query heads of a kv head are folded into the query-length dimension ([B, H_kv, rep*T,
    D], the mask's rows repeated to match), so attention reads each cached K and V once, as
    vLLM's and FlashInfer's decode kernels do. gpt-fast instead repeats K and V rep times
    (repeat_interleave) before SDPA: a copy of the whole cache window every layer and step, which
    on the H200 took 1.1 ms of a 7.1 ms graph step at batch 16 and 4.2 of 13.2 at batch 64."""
    B, H, T, D = q.shape
    kv = k.shape[1]
    rep = H // kv
    qg = q.reshape(B, kv, rep * T, D)  # head h = g * rep + r: rows (r, t) of group g
    y = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask.repeat(1, 1, rep, 1))
    return y.view(B, H, T, D)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos/sin [T, D/2]: rotate-half RoPE in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def cache_len_for(args: ModelArgs, input_len: int, output_len: int, steps: int) -> int:
    """The KV positions a cell needs, as gpt-fast sizes its cache to the request (prompt + new
    tokens; here also the timed steps), rounded up to 128 and at most max_seq_len. The peer's
    attention reads its whole cache window, so a window of max_seq_len positions would charge it
    for positions no request uses."""
    need = input_len + max(output_len, steps) + 1
    return min(args.max_seq_len, -(-need // 128) * 128)


def build(args: ModelArgs, device: torch.device, batch: int, seed: int, cache_len: int | None = None) -> Llama:
    """The model on `device` with random weights (std 1/sqrt(fan_in); embeddings N(0, 1)) and caches."""
    if args.checkpoint:
        raise Unsupported("the torch_compile peer runs random weights only; models.*.checkpoint is set")
    with torch.device("meta"):
        model = Llama(args)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif "tok_embeddings" in name:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=gen)
    model.setup_caches(batch, cache_len)
    return model.eval().requires_grad_(False)


def decode_one_token(model: Llama, tok: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """tok [B, 1] at input_pos [1] -> logits [B, V]."""
    return model(tok, input_pos)[:, -1]


def step_fn(model: Llama, mode: str):
    """The decode step as the mode runs it (compiled lazily on the first call)."""
    if mode == "eager":
        return lambda tok, pos: decode_one_token(model, tok, pos)
    import torch._inductor.config as inductor_config

    inductor_config.coordinate_descent_tuning = True  # as gpt-fast sets it
    compiled = torch.compile(decode_one_token, fullgraph=True, **_COMPILE[mode])
    return lambda tok, pos: compiled(model, tok, pos)


@torch.no_grad()
def _generate(model: Llama, step, prompt: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Greedy decode: eager prefill of prompt [B, T], then n_tokens - 1 steps; tokens read back each step."""
    B, T = prompt.shape
    dev = prompt.device
    tok = model(prompt, torch.arange(T, device=dev))[:, -1].argmax(-1, keepdim=True)
    out = [tok.cpu()]
    for i in range(n_tokens - 1):
        tok = step(tok, torch.tensor([T + i], device=dev)).argmax(-1, keepdim=True)
        out.append(tok.cpu())
    return torch.cat(out, dim=1)


def measure(kind: str, mode: str, batch_size: int | None, model: dict, workload: dict, settings: dict,
            log: TextIO | None = None) -> dict:  # fmt: skip
    """One cell of the peer (the signature every backend's measure() has; log: the cell's log, for
    progress). settings: seed, warmup_steps, timed_steps, warmup_repeats, repeats.
    Returns {'metrics', 'details'}; raises Unsupported for what cannot run here."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cuda = torch.cuda.is_available()
    if mode == "cudagraph" and not cuda:
        raise Unsupported("torch.compile(mode='reduce-overhead') captures CUDA graphs; this node has no CUDA device")
    if mode == "compile_nograph" and not cuda:
        raise Unsupported(
            "the compiled peer is measured on CUDA only: on the CPU Inductor would build C++ kernels, "
            "a different peer from the one the study compares"
        )
    if kind == "startup":
        return cold_start(_measure, kind, mode, batch_size, model, workload, settings, log)
    return _measure(kind, mode, batch_size, model, workload, settings, log)


def _measure(kind: str, mode: str, batch_size: int | None, model: dict, workload: dict, settings: dict,
             log: TextIO | None) -> dict:  # fmt: skip
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    args = ModelArgs.from_preset(model)
    s = settings
    batch = 1 if kind == "startup" else int(batch_size)
    input_len = int(workload.get("input_len", 1))
    cache_len = cache_len_for(args, input_len, int(workload.get("output_len", 1)), s["warmup_steps"] + s["timed_steps"])
    sync_device(device)
    t0 = time.perf_counter()
    m = build(args, device, batch, s["seed"], cache_len)
    sync_device(device)
    metrics: dict = {"weight_init_s": time.perf_counter() - t0}
    details: dict = {"torch": torch.__version__, "compile": _COMPILE.get(mode), "batch_size": batch,
                     "kv_cache_len": cache_len}  # fmt: skip
    step = step_fn(m, mode)
    tok = torch.randint(
        0, args.vocab_size, (batch, 1), device=device, generator=seeded_generator(device, s["seed"] + 1)
    )
    # first calls: compilation (and, for reduce-overhead, the warm-up runs and the graph recording)
    if mode in _COMPILE:
        say(log, f"[torch_compile] compiling the decode step ({_COMPILE[mode] or 'default mode'}); minutes on a GPU")
    t1 = time.perf_counter()
    firsts = []
    with torch.no_grad():
        for i in range(3):
            t = time.perf_counter()
            step(tok, torch.tensor([input_len + i], device=device))
            sync_device(device)
            firsts.append(time.perf_counter() - t)
    metrics["compile_and_first_steps_s"] = time.perf_counter() - t1
    say(log, f"[torch_compile] first three steps (compilation included): {metrics['compile_and_first_steps_s']:.1f} s")
    details["first_three_steps_s"] = firsts
    if kind == "startup":
        metrics["startup_s"] = time.perf_counter() - t0
        return {"metrics": metrics, "details": details}

    output_len = int(workload["output_len"])
    warm = s["warmup_steps"]
    details["host"] = host_record(device)  # right before the timing
    metrics.update(host_metrics(details["host"]))

    host_ms: list[float] = []

    @torch.no_grad()
    def one_round() -> list[float]:
        n = warm + s["timed_steps"]
        positions = [torch.tensor([p], device=device) for p in decode_positions(input_len, n, cache_len)]
        for pos in positions[:warm]:
            step(tok, pos)
        return [step_ms(lambda pos=pos: step(tok, pos), device, host_ms) for pos in positions[warm:]]

    t_measure = time.perf_counter()
    times, stab = timed_until_stable(one_round, adaptive=mode == "eager" and device.type == "cuda")
    metrics.update(step_metrics(times, stab, host_ms))
    details["timing"] = stab
    prompt = torch.randint(0, args.vocab_size, (batch, input_len), device=device, generator=seeded_generator(device, s["seed"]))  # fmt: skip
    e2e = seconds_per_run(lambda: _generate(m, step, prompt, output_len), device, s["warmup_repeats"], s["repeats"])
    metrics.update(e2e_metrics(e2e, batch, output_len))
    details["e2e_latency_s"] = e2e
    metrics["measured_s"] = time.perf_counter() - t_measure  # the timed steps and runs (aggregate.measured_s)
    if device.type == "cuda":
        ctx = mean_context(input_len, warm, s["timed_steps"], cache_len)
        metrics.update(floor_metrics(args, batch, ctx, metrics["decode_step_ms_median"], device))
        details["device_name"] = torch.cuda.get_device_name(device)
        # the mechanism, after all timing (the profiler can slow later launches)
        pos = torch.tensor([int(ctx)], device=device)

        @torch.no_grad()  # the grad mode the step was compiled and timed in: no guard fails, nothing recompiles
        def one_step():
            step(tok, pos)

        try:
            enq = cpu_enqueue_ms(one_step)
        except RuntimeError as e:  # the step waits for the GPU somewhere: say so, keep the rest
            enq = {"error": str(e), "median_ms": None}
        details["cpu_enqueue"] = enq
        if mode == "cudagraph":
            if enq["median_ms"] is not None:
                metrics["graph_enqueue_ms_per_step"] = enq["median_ms"]
            # steps issued back to back: the GPU's own time per step, with the host's part hidden
            metrics["gpu_ms_per_step"] = back_to_back_ms(one_step)
            details["kernels_in_graph_step"] = count_kernels(one_step)
        else:
            if enq["median_ms"] is not None:
                metrics["cpu_enqueue_ms_per_step"] = enq["median_ms"]
            prof = step_profile(one_step, enq["median_ms"], sequence=True)
            metrics.update(prof["metrics"])
            details.update(prof["details"])
    return {"metrics": metrics, "details": details}
