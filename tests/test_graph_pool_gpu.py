"""GPU tests of the graph-pool backend: the Triton kernels against float32 references, graph replay
against eager output (bit-equal: same kernels), padding, the eager fallback, greedy decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cudagraph_bench.backends.graph_pool.measure import greedy_tokens_match, measure
from cudagraph_bench.backends.graph_pool.model import ModelArgs, build_model
from cudagraph_bench.backends.graph_pool.pool import CUDAGraphPool
from cudagraph_bench.config import load as load_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


# the presets as a run sees them: validated, the schema's defaults filled in
PRESETS = load_config([Path(__file__).resolve().parents[1] / "config" / "config.yaml"])["models"]

# small, but with the 8B model's head layout (head_dim 128, 4 query heads per kv head)
SMALL = dict(PRESETS["tiny"], hidden_size=512, n_heads=8, n_kv_heads=2, head_dim=128, intermediate_size=1024,
             n_layers=2, vocab_size=1024, max_seq_len=256, dtype="bfloat16")  # fmt: skip
SIZES = [1, 2, 4, 8, 16, 32, 64]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _options(**kw):
    """The shipped launch options (PDL where supported), with overrides."""
    from dataclasses import replace

    from cudagraph_bench.backends.graph_pool.kernels import default_kernel_options

    return replace(default_kernel_options(), **kw)


def _split_k_configs(model, split: int) -> dict:
    """Tile configs that run every matmul of the model (tuning.matmul_shapes) split-K, at every bucket."""
    from cudagraph_bench.backends.graph_pool.tuning import BUCKETS, matmul_shapes

    gemv, dot = (16, 128, 4, 1, split), (32, 64, 4, 3, split)
    return {(bm, sh["N"], sh["K"]): gemv if bm == 1 else dot for sh in matmul_shapes(model) for bm in BUCKETS}


# decode attention configs per batch size as the tuner picks them (these are its H200 choices at
# 15aa340): neighbouring sizes differ, so a batch of 3, 5, 37 or 63 must take those of the size
# its graph pads to, or its eager step runs other kernels than the graph
TUNED_ATTENTION = {1: (16, 64, 4, 3), 2: (8, 64, 4, 3), 4: (16, 64, 4, 3), 8: (1, 64, 4, 3), 16: (1, 64, 4, 3),
                   32: (1, 64, 4, 3), 64: (1, 64, 8, 2)}  # fmt: skip


@pytest.fixture(scope="module", params=["tiles", "split_k"])
def model(request):
    """The pool's tests run twice: with the heuristic tiles, and as tuned: every matmul split-K
    and decode attention configured per batch size."""
    m = build_model(ModelArgs.from_preset(SMALL), "cuda", 0)
    m.setup_caches(80)
    tuned = request.param == "split_k"
    configs = _split_k_configs(m, 2) if tuned else {}
    m.set_backend("triton", _options(linear_configs=configs, attn_configs=dict(TUNED_ATTENTION) if tuned else {}))
    return m


@pytest.fixture(scope="module")
def pool(model):
    p = CUDAGraphPool(model, SIZES)
    p.capture()
    return p


def _with_split(opts, M: int, N: int, Kd: int, split: int):
    """opts with a tuned config that runs (M, N, Kd) split `split` ways (1: the heuristic)."""
    from cudagraph_bench.backends.graph_pool import kernels as K

    if split > 1:
        bm = K.linear_config(M, N, Kd, opts)[0]
        opts.linear_configs[(bm, N, Kd)] = (16, 256, 4, 1, split) if bm == 1 else (32, 128, 4, 3, split)
    return opts


@pytest.mark.parametrize("M", [1, 4, 16, 37, 64, 100])
@pytest.mark.parametrize("gemv", [False, True])
@pytest.mark.parametrize("split", [1, 4])
def test_linear_kernel_against_float32(M, gemv, split):
    from cudagraph_bench.backends.graph_pool import kernels as K

    Kd, N = 1024, 768
    opts = _with_split(_options(gemv_m1=gemv), M, N, Kd, split)
    g = torch.Generator(device="cuda").manual_seed(M)
    x = torch.randn(M, Kd, device="cuda", generator=g).bfloat16()
    w = (torch.randn(2 * N, Kd, device="cuda", generator=g) / Kd**0.5).bfloat16()
    nw = (1 + 0.1 * torch.randn(Kd, device="cuda", generator=g)).bfloat16()
    r = torch.randn(M, N, device="cuda", generator=g).bfloat16()
    xn = F.rms_norm(x.float(), (Kd,), nw.float(), 1e-5)
    wg = (w.float() * nw.float()).bfloat16()  # the norm weight folded in, as the model does
    assert _rel(K.linear(x, wg[:N], opts, rms_norm=True, eps=1e-5), xn @ w[:N].float().T) < 1e-2
    assert (
        _rel(K.linear(x, wg[:N], opts, rms_norm=True, eps=1e-5, out_dtype=torch.float32), xn @ w[:N].float().T) < 5e-3
    )
    assert _rel(K.linear(x, w[:N], opts, residual=r.clone()), r.float() + x.float() @ w[:N].float().T) < 1e-2
    gu = xn @ w.float().T
    assert _rel(K.linear(x, wg, opts, rms_norm=True, eps=1e-5, silu_mul=True), F.silu(gu[:, :N]) * gu[:, N:]) < 1e-2


@pytest.mark.parametrize("M", [1, 16, 37, 64, 100])
@pytest.mark.parametrize("kind", ["norm", "residual", "silu", "norm_fp32"])
@pytest.mark.parametrize("split", [1, 4])
def test_linear_kernel_is_deterministic(M, kind, split):
    """Same inputs, same bits, every time: a race in a kernel (split-K's reduction) shows up here first."""
    from cudagraph_bench.backends.graph_pool import kernels as K

    Kd, N = 2048, 1024
    opts = _with_split(_options(), M, N, Kd, split)
    x = torch.randn(M, Kd, device="cuda").bfloat16()
    w = (torch.randn(2 * N, Kd, device="cuda") / Kd**0.5).bfloat16()
    r = torch.randn(M, N, device="cuda").bfloat16()

    def run():
        if kind == "residual":
            return K.linear(x, w[:N], opts, residual=r.clone())
        if kind == "silu":
            return K.linear(x, w, opts, rms_norm=True, eps=1e-5, silu_mul=True)
        return K.linear(
            x, w[:N], opts, rms_norm=True, eps=1e-5, out_dtype=torch.float32 if kind == "norm_fp32" else None
        )

    first = run()
    for _ in range(20):
        assert torch.equal(run(), first)


@pytest.mark.parametrize("splits", [None, 1, 4, "tuned"])
def test_decode_attention_against_torch(model, splits):
    """splits None: the heuristic; "tuned": a tuned config for this batch size (BLOCK_S 32, 8 warps)."""
    from dataclasses import replace

    from cudagraph_bench.backends.graph_pool import kernels as K

    torch.manual_seed(1)
    at = model.layers[0].attention
    c = at.kv_cache
    B, H, Hkv, D = 5, at.n_heads, at.n_kv_heads, at.head_dim
    c.k_cache.normal_()
    c.v_cache.normal_()
    qkv = torch.randn(B, (H + 2 * Hkv) * D, device="cuda").bfloat16()
    pos = torch.tensor([0, 1, 63, 64, 200], device="cuda")
    rows = torch.tensor([4, 0, 1, 2, 3], device="cuda")
    k_before = c.k_cache.clone()
    opts = model.kernel_opts
    if splits == "tuned":
        opts, splits = replace(opts, attn_configs={B: (4, 32, 8, 3)}), None
    out = K.decode_attention(qkv, pos, rows, model.rope_cos, model.rope_sin, c.k_cache, c.v_cache, H, Hkv,
                             opts, num_splits=splits)  # fmt: skip
    # reference in float32 from the cache as the kernel left it (new k/v written at pos)
    for b in range(B):
        r, p = rows[b].item(), pos[b].item()
        q = qkv[b, : H * D].view(H, D).float()
        cos, sin = model.rope_cos[p], model.rope_sin[p]
        q1, q2 = q[:, : D // 2], q[:, D // 2 :]
        q = torch.cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin], -1).bfloat16().float()
        k = c.k_cache[r, : p + 1].float().repeat_interleave(H // Hkv, dim=1)  # [p+1, H, D]
        v = c.v_cache[r, : p + 1].float().repeat_interleave(H // Hkv, dim=1)
        att = torch.softmax(torch.einsum("hd,shd->hs", q, k) / D**0.5, -1)
        ref = torch.einsum("hs,shd->hd", att, v).reshape(-1)
        assert _rel(out[b].float(), ref) < 1e-2, b
        assert torch.equal(c.k_cache[r, :p], k_before[r, :p])  # only slot p written
        assert torch.equal(c.v_cache[r, p], qkv[b, (H + Hkv) * D :].view(Hkv, D))


def _inputs(model, n, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    tok = torch.randint(0, model.args.vocab_size, (n,), device="cuda", generator=g)
    pos = torch.randint(1, model.args.max_seq_len, (n,), device="cuda", generator=g)
    return tok, pos, torch.arange(n, device="cuda")


@pytest.mark.parametrize("n", SIZES + [3, 5, 37, 63])
def test_graph_equals_eager(pool, model, n):
    r = pool.compare_with_eager(*_inputs(model, n, n))
    assert r["bit_equal"], r
    assert r["padded_size"] == next(s for s in SIZES if s >= n)


@pytest.mark.parametrize("n", [1, 4, 64])
def test_attention_window_prefetch_keeps_the_output(model, n):
    """Decode attention's L2 prefetch of the output projection's weights changes when bytes arrive,
    not what is computed: the step is bit-equal with it and without it."""
    from dataclasses import replace

    saved = model.kernel_opts
    if not saved.pdl:
        pytest.skip("the prefetch runs with programmatic dependent launch (sm90+), as the shipped options do")
    # a seed of its own: another test's seed would leave that test's cache slots already holding its k/v
    tok, pos, rows = _inputs(model, n, 300 + n)
    outs = []
    try:
        with torch.inference_mode():
            for mb in (0.0, 8.0, 64.0):  # none, the default, the whole weight
                model.kernel_opts = replace(saved, attn_prefetch_mb=mb)
                outs.append(model.decode(tok, pos, rows).clone())
    finally:
        model.kernel_opts = saved
    assert saved.attn_prefetch_mb > 0 and all(torch.equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("n", [1, 4, 64])
def test_eager_decode_is_deterministic(model, n):
    tok, pos, rows = _inputs(model, n, 100 + n)
    with torch.inference_mode():
        first = model.decode(tok, pos, rows).clone()
        for _ in range(5):
            assert torch.equal(model.decode(tok, pos, rows), first)


def test_padded_rows_never_touch_real_sequences(pool, model):
    tok, pos, rows = _inputs(model, 37, 7)
    before = [layer.attention.kv_cache.k_cache[:80].clone() for layer in model.layers]
    pool.step(tok, pos, rows)
    for layer, b in zip(model.layers, before, strict=True):
        changed = (layer.attention.kv_cache.k_cache[:80] != b).any(-1).any(-1).nonzero().tolist()
        assert sorted(map(tuple, changed)) == sorted(zip(rows.tolist(), pos.tolist(), strict=True))
    # a smaller batch after a full one: the leftover rows must be pointed back at scratch
    pool.step(*_inputs(model, 64, 8))
    g = pool.dispatch(37)
    pool.step(tok, pos, rows)
    assert (g.rows[37:] == model.scratch_row).all()


def test_eager_fallback_above_largest_size(pool, model):
    tok, pos, rows = _inputs(model, 72, 9)
    assert pool.dispatch(72) is None
    with torch.inference_mode():
        assert torch.equal(pool.step(tok, pos, rows), model.decode(tok, pos, rows))


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_greedy_tokens_identical(pool, model, batch):
    r = greedy_tokens_match(model, pool, batch, prompt_len=12, n_tokens=24, seed=batch)
    assert r["identical"], r


def test_capture_stats(pool):
    s = pool.summary()
    assert s["capture_sizes"] == SIZES
    assert all(p["memory_mb"] >= 0 and p["capture_s"] > 0 for p in s["per_size"])


def test_triton_close_to_torch_reference(model):
    tok, pos, rows = _inputs(model, 4, 11)
    with torch.inference_mode():
        tri = model.decode(tok, pos, rows).clone()
        ref = model.decode_torch(tok, pos, rows)
    assert _rel(tri, ref) < 2e-2


def test_measure_cells_on_gpu():
    settings = {"warmup_steps": 2, "timed_steps": 50, "repeats": 1, "warmup_repeats": 1, "capture_sizes": [1, 2, 4],
                "seed": 0, "device": "cuda"}  # fmt: skip
    wl = {"input_len": 16, "output_len": 8}
    g = measure("latency", "cudagraph", 3, SMALL, wl, settings)
    m = g["metrics"]
    for name in ("decode_step_ms_median", "gpu_ms_per_step", "kernels_per_step", "cpu_enqueue_ms_per_step",
                 "hbm_floor_ms", "copy_bandwidth_gbps", "graph_over_floor", "graph_memory_mb", "capture_s_total"):  # fmt: skip
        assert m[name] > 0, name
    assert m["padded_batch_size"] == 4 and g["details"]["graph_vs_eager"]["bit_equal"]
    e = measure("latency", "eager", 3, SMALL, wl, settings)["metrics"]
    assert e["kernels_per_step"] == m["kernels_per_step"] and "gpu_ms_per_step" not in e
    s = measure("startup", "cudagraph", None, SMALL, {}, settings)["metrics"]
    assert s["startup_s"] >= s["capture_s_total"] > 0


def test_triton_as_accurate_as_torch_against_float32():
    """bf16 with the Triton kernels and bf16 with torch ops land about equally far from float32."""
    import copy

    small = build_model(ModelArgs.from_preset(SMALL), "cuda", 2)
    ref = copy.deepcopy(small).float()
    for m in (small, ref):
        m.setup_caches(4)
    small.set_backend("triton", _options())
    tok = torch.randint(0, SMALL["vocab_size"], (4, 17), device="cuda")
    pos = torch.arange(17, device="cuda")[None].expand(4, -1)
    out = {}
    with torch.inference_mode():
        for name, m, backend in (("fp32", ref, "torch"), ("torch", small, "torch"), ("triton", small, "triton")):
            m.backend = backend
            m(tok[:, :16], pos[:, :16])
            out[name] = m.decode(tok[:, 16], pos[:, 16], torch.arange(4, device="cuda"))
    err_torch, err_triton = _rel(out["torch"], out["fp32"]), _rel(out["triton"], out["fp32"])
    assert err_triton < 2e-2 and err_triton < 2 * err_torch + 1e-3, (err_triton, err_torch)


def test_prefill_elementwise_kernels_match_torch():
    """The triton backend's prefill RoPE and SiLU·up against the torch path's ops, in bf16 on a
    strided view as the model passes them; and a whole prefill against the torch backend."""
    from cudagraph_bench.backends.graph_pool import kernels as K
    from cudagraph_bench.backends.graph_pool.model import apply_rope, rope_tables

    g = torch.Generator(device="cuda").manual_seed(5)
    qkv = torch.randn(3, 70, 12 * 128, device="cuda", generator=g).bfloat16()
    q = qkv[..., : 8 * 128].view(3, 70, 8, 128)  # row stride 12 heads: a view, as in Attention
    cos, sin = (t.cuda()[torch.arange(70, device="cuda")].expand(3, 70, 64) for t in rope_tables(70, 128, 5e5))
    assert _rel(K.rope(q, cos, sin), apply_rope(q, cos, sin)) < 1e-2
    gu = torch.randn(300, 2 * 1000, device="cuda", generator=g).bfloat16()
    assert _rel(K.silu_mul(gu), F.silu(gu[:, :1000]) * gu[:, 1000:]) < 1e-2
    m = [build_model(ModelArgs.from_preset(SMALL), "cuda", 0) for _ in range(2)]
    for x in m:
        x.setup_caches(4)
    m[1].set_backend("triton")
    tok = torch.randint(0, SMALL["vocab_size"], (3, 70), device="cuda", generator=g)
    pos = torch.arange(70, device="cuda")[None].expand(3, 70)
    with torch.inference_mode():
        lr, lt = (x(tok, pos, None, last_only=True, prefill=True) for x in m)
    assert _rel(lt, lr) < 2e-2
