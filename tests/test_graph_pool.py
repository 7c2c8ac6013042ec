"""CPU tests of the graph-pool backend: model pieces, the pool's dispatch table, measure() on CPU,
and (where Triton is installed) the Triton kernels through Triton's CPU interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from cudagraph_bench.backends.graph_pool.measure import bytes_per_step, measure
from cudagraph_bench.backends.graph_pool.model import (
    KVCache,
    ModelArgs,
    build_model,
    hf_to_fused,
)
from cudagraph_bench.backends.graph_pool.padding import padded_size, padding_waste, validate_capture_sizes
from cudagraph_bench.backends.graph_pool.pool import CUDAGraphPool
from cudagraph_bench.config import load as load_config
from cudagraph_bench.errors import Unsupported

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"


# the presets as a run sees them: validated, the schema's defaults filled in
PRESETS = load_config([Path(__file__).resolve().parents[1] / "config" / "config.yaml"])["models"]
TINY = dict(PRESETS["tiny"], n_layers=2, vocab_size=512, max_seq_len=64)
SETTINGS = {"warmup_steps": 1, "timed_steps": 3, "repeats": 1, "warmup_repeats": 0,
            "capture_sizes": [1, 2, 4], "seed": 0, "device": "cpu"}  # fmt: skip


def test_from_preset_rejects_unknown_keys_and_ignores_foreign_ones():
    args = ModelArgs.from_preset(dict(TINY, name="tiny", vllm_model_dir=None, checkpoint=None))
    assert args.n_layers == 2
    with pytest.raises(ValueError, match="unknown model preset keys"):
        ModelArgs.from_preset(dict(TINY, hiden_size=3))
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        ModelArgs.from_preset(dict(TINY, n_kv_heads=3))
    with pytest.raises(ValueError, match="dtype"):
        ModelArgs.from_preset(dict(TINY, dtype="int8"))


def test_kv_cache_update_writes_only_the_given_slots():
    cache = KVCache(rows=4, max_seq=8, n_kv_heads=2, head_dim=4, dtype=torch.float32, device="cpu")
    k = torch.randn(2, 3, 2, 4)  # [B, T, Hkv, D]
    v = torch.randn(2, 3, 2, 4)
    pos = torch.tensor([[0, 1, 2], [5, 6, 7]])
    rows = torch.tensor([3, 1])
    cache.update(pos, k, v, rows)
    assert torch.equal(cache.k_cache[3, 0:3], k[0])
    assert torch.equal(cache.v_cache[1, 5:8], v[1])
    written = torch.zeros(4, 8, dtype=torch.bool)
    written[3, 0:3] = written[1, 5:8] = True
    assert not cache.k_cache[~written].any() and not cache.v_cache[~written].any()
    # rows=None: batch b goes to row b, and the returned views are the cache itself
    k_all, _ = cache.update(torch.tensor([4]), k[:, :1], v[:, :1])
    assert torch.equal(cache.k_cache[0, 4], k[0, 0]) and k_all.data_ptr() == cache.k_cache.data_ptr()


def _twin_models(batch: int, length: int):
    """Two tiny models with the same weights and caches for `batch` rows, and a prompt [batch, length]
    at positions 0..length-1."""
    args = ModelArgs.from_preset(TINY)
    twins = build_model(args, "cpu", 0), build_model(args, "cpu", 0)
    for m in twins:
        m.setup_caches(batch)
    tok = torch.randint(0, args.vocab_size, (batch, length))
    return *twins, tok, torch.arange(length)[None].expand(batch, length)


@torch.inference_mode()
def test_incremental_decode_matches_full_forward():
    full_model, inc_model, tok, pos = _twin_models(2, 9)
    full = full_model(tok, pos)
    outs = [inc_model(tok[:, :5], pos[:, :5])]
    for t in range(5, 9):
        outs.append(inc_model.decode(tok[:, t], pos[:, t], torch.arange(2))[:, None])
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_prefill_path_matches_the_cache_window_path():
    """prefill=True (causal attention over the prompt alone) gives the logits of the masked
    cache-window path and writes the same cache (up to rounding after the first attention)."""
    window, fresh, tok, pos = _twin_models(3, 7)
    torch.testing.assert_close(fresh(tok, pos, prefill=True), window(tok, pos), rtol=1e-4, atol=1e-4)
    first = window.layers[0].attention.kv_cache, fresh.layers[0].attention.kv_cache
    assert torch.equal(first[0].k_cache, first[1].k_cache)  # before any attention output: same bits
    for a, b in zip(window.layers, fresh.layers, strict=True):
        ka, kb = a.attention.kv_cache, b.attention.kv_cache
        assert ka.k_cache[:, 7:].count_nonzero() == 0 and kb.k_cache[:, 7:].count_nonzero() == 0
        torch.testing.assert_close(kb.k_cache, ka.k_cache, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(kb.v_cache, ka.v_cache, rtol=1e-4, atol=1e-4)


def test_same_seed_same_weights():
    args = ModelArgs.from_preset(TINY)
    a, b, c = build_model(args, "cpu", 0), build_model(args, "cpu", 0), build_model(args, "cpu", 1)
    assert torch.equal(a.layers[0].attention.wqkv.weight, b.layers[0].attention.wqkv.weight)
    assert not torch.equal(a.layers[0].attention.wqkv.weight, c.layers[0].attention.wqkv.weight)


@torch.inference_mode()
def test_hf_checkpoint_round_trip(tmp_path):
    args = ModelArgs.from_preset(TINY)
    src = build_model(args, "cpu", 3)
    H, Hkv, D, i = args.n_heads, args.n_kv_heads, args.head_dim, args.intermediate_size
    sd = {"model.embed_tokens.weight": src.tok_embeddings.weight, "model.norm.weight": src.norm.weight,
          "lm_head.weight": src.output.weight}  # fmt: skip
    for n, layer in enumerate(src.layers):
        p = f"model.layers.{n}."
        q, k, v = layer.attention.wqkv.weight.split([H * D, Hkv * D, Hkv * D])
        g, u = layer.feed_forward.w13.weight.split([i, i])
        sd |= {p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
               p + "self_attn.o_proj.weight": layer.attention.wo.weight, p + "mlp.gate_proj.weight": g,
               p + "mlp.up_proj.weight": u, p + "mlp.down_proj.weight": layer.feed_forward.w2.weight,
               p + "input_layernorm.weight": layer.attention_norm.weight,
               p + "post_attention_layernorm.weight": layer.ffn_norm.weight}  # fmt: skip
    torch.save({k: t.clone() for k, t in sd.items()}, tmp_path / "model.pt")
    loaded = build_model(ModelArgs.from_preset(dict(TINY, checkpoint=str(tmp_path))), "cpu", 99)
    for m in (src, loaded):
        m.setup_caches(1)
    tok = torch.randint(0, args.vocab_size, (1, 4))
    pos = torch.arange(4)[None]
    assert torch.equal(src(tok, pos), loaded(tok, pos))
    assert set(hf_to_fused(sd, args.n_layers)) == {k for k, _ in src.named_parameters()}
    with pytest.raises(ValueError, match="neither a file nor a directory"):
        build_model(ModelArgs.from_preset(dict(TINY, checkpoint=str(tmp_path / "nope"))), "cpu", 0)


def test_capture_sizes_are_validated():
    assert validate_capture_sizes([4, 1, 2]) == [1, 2, 4]
    for bad in ([], [0, 1], [1, 1], [1, 2.0], "1,2", [True]):
        with pytest.raises(ValueError):
            validate_capture_sizes(bad)


def test_the_padding_rule_is_a_pure_function():
    """One rule for the pool, its measurements and figure 5 (padding.py)."""
    assert [padded_size(n, [1, 4, 16, 64]) for n in range(1, 66)] == [1] + [4] * 3 + [16] * 12 + [64] * 48 + [None]
    sizes = [1, 2, 4, 8, 16, 32, 64]
    assert padding_waste(37, sizes) == pytest.approx(27 / 64) and padding_waste(64, sizes) == 0
    assert padding_waste(65, sizes) is None
    with pytest.raises(ValueError):
        padded_size(0, sizes)


def test_padding_dispatch():
    model = build_model(ModelArgs.from_preset(TINY), "cpu", 0)
    with pytest.raises(ValueError, match="setup_caches"):
        CUDAGraphPool(model, [1, 2])
    model.setup_caches(8)
    pool = CUDAGraphPool(model, [64, 1, 4, 16])
    assert [pool.padded_size(n) for n in (1, 2, 4, 5, 37, 64)] == [1, 4, 4, 16, 64, 64]
    assert pool.padded_size(65) is None and pool.dispatch(65) is None  # eager above the largest size
    with pytest.raises(ValueError):
        pool.padded_size(0)
    with pytest.raises(RuntimeError, match="CUDA"):
        pool.capture()


def test_measure_eager_on_cpu_runs_and_names_units():
    out = measure("latency", "eager", 2, TINY, {"input_len": 6, "output_len": 3, "kind": "latency"}, SETTINGS)
    m = out["metrics"]
    for name in ("decode_step_ms_median", "decode_step_ms_p10", "decode_step_ms_p90", "e2e_latency_s_mean",
                 "e2e_latency_s_median", "e2e_latency_s_p90", "output_tokens_per_s", "ms_per_output_token",
                 "prefill_ms", "padded_batch_size", "padding_waste_frac"):  # fmt: skip
        assert isinstance(m[name], float) and m[name] >= 0, name
    assert m["output_tokens_per_s"] == pytest.approx(2 * 3 / m["e2e_latency_s_mean"])
    for gpu_only in ("kernels_per_step", "hbm_floor_ms", "gpu_ms_per_step", "cpu_enqueue_ms_per_step"):
        assert gpu_only not in m
    assert out["details"]["backend"] == "torch"
    # 3 is not a capture size: padded to 4
    m3 = measure("latency", "eager", 3, TINY, {"input_len": 4, "output_len": 2}, SETTINGS)["metrics"]
    assert m3["padded_batch_size"] == 4 and m3["padding_waste_frac"] == pytest.approx(0.25)


def test_measure_refusals():
    with pytest.raises(Unsupported, match="CUDA graphs need a CUDA device; this node has none"):
        measure("latency", "cudagraph", 1, TINY, {"input_len": 4, "output_len": 2}, SETTINGS)
    with pytest.raises(Unsupported):
        measure("startup", "cudagraph", None, TINY, {}, SETTINGS)
    with pytest.raises(ValueError, match="max_seq_len"):
        measure("latency", "eager", 1, TINY, {"input_len": 60, "output_len": 10}, SETTINGS)
    with pytest.raises(ValueError, match="kind"):
        measure("serving", "eager", 1, TINY, {}, SETTINGS)
    with pytest.raises(ValueError, match="timed_steps must be >= 50"):
        measure("latency", "eager", 1, TINY, {"input_len": 4, "output_len": 2}, dict(SETTINGS, device="cuda"))


def test_measure_startup_eager_on_cpu(monkeypatch, tmp_path):
    from cudagraph_bench.backends.graph_pool import measure as gm

    # a node whose caches are warm: the startup cell must not see them
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    seen = []
    make_model = gm.make_model

    def spy(*a, **k):
        seen.append({v: os.environ[v] for v in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")})
        return make_model(*a, **k)

    monkeypatch.setattr(gm, "make_model", spy)
    out = measure("startup", "eager", None, TINY, {}, SETTINGS)
    m = out["metrics"]
    assert m["startup_s"] >= m["weight_init_s"] > 0
    assert out["details"]["compile_cache"] == gm.COLD_CACHES
    (env,) = seen
    assert env["TRITON_CACHE_DIR"] == os.path.join(env["TORCHINDUCTOR_CACHE_DIR"], "triton")
    assert not env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))
    assert not os.path.exists(env["TORCHINDUCTOR_CACHE_DIR"])  # removed after the cell
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "triton")  # and the node's put back


def test_cold_compile_caches_start_empty():
    from cudagraph_bench.backends.graph_pool.measure import cold_compile_caches

    with cold_compile_caches():
        inductor = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        assert os.listdir(inductor) == [] and os.environ["TRITON_CACHE_DIR"].startswith(inductor)
    assert not os.path.exists(inductor)


def test_bytes_per_step_llama_8b():
    args = ModelArgs.from_preset(dict(PRESETS["llama-3.1-8b"], max_seq_len=384))
    weights = bytes_per_step(args, 1, 0) - 2 * 32 * 2 * 8 * 128  # minus one KV position written
    # every weight except the embedding table: 8.03e9 - 0.525e9 parameters, bf16
    assert weights / 2 == pytest.approx(7.505e9, rel=2e-3)


# ------------------------------------------------------------- Triton kernels on the CPU interpreter

_INTERP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pytest, torch, torch.nn.functional as F
    import triton, triton.language as tl
    from cudagraph_bench.backends.graph_pool import kernels as K
    from cudagraph_bench.backends.graph_pool.model import ModelArgs, apply_rope, build_model
    PRESETS = json.loads(sys.argv[1])

    def rel(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    torch.manual_seed(0)
    for M in (1, 3, 17):
        for gemv in (True, False):
            for split in (1, 3):  # split-K: each program streams a third of K, the last one adds them up
                opts = K.KernelOptions(gemv_m1=gemv)
                Kd, N = 96, 40
                if split > 1:
                    bm = K.linear_config(M, N, Kd, opts)[0]
                    opts.linear_configs[(bm, N, Kd)] = (16, 32, 4, 1, split)
                x, w = torch.randn(M, Kd), torch.randn(2 * N, Kd) / Kd**0.5
                g, r = 1 + 0.1 * torch.randn(Kd), torch.randn(M, N)
                xn = F.rms_norm(x, (Kd,), g, 1e-5)
                assert rel(K.linear(x, w[:N] * g, opts, rms_norm=True, eps=1e-5), xn @ w[:N].T) < 1e-5
                assert rel(K.linear(x, w[:N], opts, residual=r.clone()), r + x @ w[:N].T) < 1e-5
                gu = xn @ w.T
                assert rel(K.linear(x, w * g, opts, rms_norm=True, eps=1e-5, silu_mul=True), F.silu(gu[:, :N]) * gu[:, N:]) < 1e-5
                if split > 1:  # every tile's counter is back at zero for the next launch
                    assert not K._SCRATCH[("cpu", None, "counters")].any()
    # the attention-window prefetch's plan: the lines the programs ask for are the first lines of
    # every row of the next matmul's weight at the start of each of its split-K slices, each once
    @triton.jit
    def lines_kernel(OUT, per, total, nk, nklen, nlines, LINE: tl.constexpr, BLOCK: tl.constexpr):
        p = tl.program_id(0)
        tl.store(OUT + p * BLOCK + tl.arange(0, BLOCK), K._next_lines(p, per, total, nk, nklen, nlines, LINE, BLOCK))

    # the host's launch arithmetic in plain Python gives triton's answers
    assert all(K._next_pow2(n) == triton.next_power_of_2(n) and K._cdiv(n, 7) == triton.cdiv(n, 7) for n in range(300))

    popts = K.KernelOptions(linear_configs={(16, 40, 1024): (16, 64, 4, 1, 2)})
    w_next = torch.empty(40, 1024, dtype=torch.bfloat16)
    per, total, nk, nklen, nlines, block = K.weight_lines(3, w_next, 7, 3 * 40 * 2 * 128 / 2**20, popts, 132)
    assert (total, nk, nklen, nlines) == (40 * 2 * 3, 1024, 512, 3) and per == -(-total // 7) and block >= per
    got = torch.zeros(7, block, dtype=torch.int64)
    lines_kernel[(7,)](got, per, total, nk, nklen, nlines, LINE=64, BLOCK=block)
    assert set(got.flatten().tolist()) == {r * 1024 + s * 512 + l * 64 for r in range(40) for s in range(2) for l in range(3)}
    assert K.weight_lines(3, w_next, 7, 1e-4, popts, 132)[-1] == 0  # under a line per row: nothing
    assert K.weight_lines(3, w_next, 7, 64.0, popts, 132)[4] == 8  # at most a whole slice: 512 bf16, 8 lines

    opts = K.KernelOptions()
    opts.linear_configs[(16, 40, 96)] = (16, 64, 4, 1, 2)
    with pytest.raises(ValueError, match="SPLIT_K"):  # 96 is not two slices of whole 64-wide steps
        K.linear(torch.randn(3, 96), torch.randn(40, 96), opts)
    with pytest.raises(ValueError, match="norm_eps"):  # the epsilon is the model's: never a default
        K.linear(x, w[:N], opts, rms_norm=True)

    args = ModelArgs.from_preset(dict(PRESETS["tiny"], n_layers=2, vocab_size=256, max_seq_len=160))
    ref, tri = build_model(args, "cpu", 0), build_model(args, "cpu", 0)
    for m in (ref, tri):
        m.setup_caches(4)
    tri.set_backend("triton")
    tok = torch.randint(0, 256, (3, 70))
    pos = torch.arange(70)[None].expand(3, 70)
    with torch.inference_mode():
        ref(tok, pos)
        tri(tok, pos)
        dpos, rows, t = torch.tensor([69, 12, 40]), torch.arange(3), torch.randint(0, 256, (3,))
        assert rel(tri.decode(t, dpos, rows), ref.decode(t, dpos, rows)) < 1e-5
        # padded rows point at the scratch row and leave every real row untouched
        before = [l.attention.kv_cache.k_cache[:4].clone() for l in tri.layers]
        n = lambda v: torch.tensor(v)
        out = tri.decode(n([5, 0, 0]), n([70, 0, 0]), n([0, tri.scratch_row, tri.scratch_row]))
        assert rel(out[:1], ref.decode(n([5]), n([70]), n([0]))) < 1e-5
        for l, b in zip(tri.layers, before):
            changed = (l.attention.kv_cache.k_cache[:4] != b).any(-1).any(-1).nonzero().tolist()
            assert changed == [[0, 70]], changed
        # split attention (flash-decoding) equals one split
        c = tri.layers[1].attention.kv_cache
        qkv = torch.randn(3, args.qkv_dim)
        o = [K.decode_attention(qkv, dpos + 2, rows, tri.rope_cos, tri.rope_sin, c.k_cache, c.v_cache, 8, 2,
                                tri.kernel_opts, num_splits=s) for s in (1, 4)]
        assert rel(o[1], o[0]) < 1e-5
        # a tuned config for this batch size (4 splits of 32-position blocks) equals one split too
        tuned = K.KernelOptions(attn_configs={3: (4, 32, 4, 2)})
        o2 = K.decode_attention(qkv, dpos + 2, rows, tri.rope_cos, tri.rope_sin, c.k_cache, c.v_cache, 8, 2, tuned)
        assert rel(o2, o[0]) < 1e-5
        # a batch of 3 in a pool of sizes 1, 2, 4 takes the configs of 4, the size its graph pads to:
        # its rows are bit-equal to the padded batch's (four splits; without the size classes: the one-split heuristic)
        by_size = K.KernelOptions(attn_configs={2: (1, 64, 4, 2), 4: (4, 32, 4, 2)}, size_classes=(1, 2, 4))
        q4 = torch.cat([qkv, torch.randn(1, args.qkv_dim)])
        p4, r4 = torch.cat([dpos + 2, n([1])]), torch.cat([rows, n([tri.scratch_row])])
        a3 = K.decode_attention(qkv, dpos + 2, rows, tri.rope_cos, tri.rope_sin, c.k_cache, c.v_cache, 8, 2, by_size)
        a4 = K.decode_attention(q4, p4, r4, tri.rope_cos, tri.rope_sin, c.k_cache, c.v_cache, 8, 2, by_size)
        assert by_size.config_batch(3) == 4 and by_size.config_batch(9) == 9 and K.KernelOptions().config_batch(3) == 3
        assert torch.equal(a3, a4[:3])
        # a prefill with the triton backend: RoPE and SiLU·up as Triton kernels, the rest torch
        fresh = [build_model(args, "cpu", 0) for _ in range(2)]
        for m in fresh:
            m.setup_caches(4)
        fresh[1].set_backend("triton")
        lr, lt = (m(tok, pos, None, last_only=True, prefill=True) for m in fresh)
        assert rel(lt, lr) < 1e-5
        for a, b in zip(fresh[0].layers, fresh[1].layers):
            assert rel(b.attention.kv_cache.k_cache, a.attention.kv_cache.k_cache) < 1e-5
        xq, cs = torch.randn(2, 5, 3, 32), torch.randn(2, 5, 32)  # the head dim's halves taken apart
        assert rel(K.rope(xq, cs[..., :16], cs[..., 16:]), apply_rope(xq, cs[..., :16], cs[..., 16:])) < 1e-6
        gu = torch.randn(7, 80)
        assert rel(K.silu_mul(gu), F.silu(gu[:, :40]) * gu[:, 40:]) < 1e-6
    print("INTERPRETER OK")
    """
)


def test_triton_kernels_on_the_cpu_interpreter(tmp_path):
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(WORKFLOW), *sys.path]))
    presets = json.dumps({"tiny": PRESETS["tiny"]})
    script = tmp_path / "interpret.py"  # a file: triton.jit reads a kernel's source
    script.write_text(_INTERP_SCRIPT)
    r = subprocess.run([sys.executable, str(script), presets], env=env, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    if r.returncode and "only 0-dimensional arrays can be converted" in r.stderr:
        pytest.skip("this Triton's interpreter does not run with this NumPy (needs numpy < 2.3)")
    assert r.returncode == 0 and "INTERPRETER OK" in r.stdout, r.stderr[-4000:]


def test_persistent_chain_benchmark_computes_the_chain_on_the_cpu_interpreter():
    """benchmarks/persistent_chain.py's kernel against its float32 reference (one program, so its
    barriers pass on the interpreter, which runs programs one after another)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(WORKFLOW), *sys.path]))
    r = subprocess.run([sys.executable, str(WORKFLOW.parent / "benchmarks/persistent_chain.py")], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if r.returncode and "only 0-dimensional arrays can be converted" in r.stderr:
        pytest.skip("this Triton's interpreter does not run with this NumPy (needs numpy < 2.3)")
    assert r.returncode == 0 and "interpreter check passed" in r.stdout, (r.stdout + r.stderr)[-4000:]


def test_the_m1_kernel_is_chosen_by_the_whole_steps_time():
    """Each matmul's M == 1 kernel is the one with the faster decode step, whatever it did alone."""
    from cudagraph_bench.backends.graph_pool import tuning

    qkv, gate_up = (1, 6144, 4096), (1, 14336, 4096)
    configs = {qkv: None, gate_up: None, (16, 6144, 4096): (64, 128, 4, 4)}  # as timed alone: tensor cores
    options = {qkv: [(8, 1024, 4, 1), None], gate_up: [(16, 256, 4, 1), None]}

    def step_ms():  # in the step the GEMV wins for gate_up, the tensor-core kernel for qkv
        return 5.0 + (0.1 if configs[qkv] is not None else 0) + (0.7 if configs[gate_up] is None else 0)

    picked = tuning.race_in_step(configs, options, step_ms)
    assert configs[qkv] is None and configs[gate_up] == (16, 256, 4, 1)
    assert configs[(16, 6144, 4096)] == (64, 128, 4, 4)  # other buckets untouched
    assert picked[gate_up] == {"cfg": (16, 256, 4, 1), "in_step_ms": {"[16, 256, 4, 1]": 5.0, "tensor-core": 5.7}}
    # raced first, while gate_up still ran on tensor cores: one matmul at a time, in order
    assert picked[qkv]["in_step_ms"] == {"[8, 1024, 4, 1]": 5.8, "tensor-core": 5.7}


def test_tile_configs_are_tuned_once_per_gpu_model_and_then_read_from_the_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cudagraph_bench.backends.graph_pool import tuning

    calls = []
    key = {"format": 1, "gpu_name": "NVIDIA H200", "shapes": [(6144, 4096)], "triton": "3.6.0"}
    monkeypatch.setattr(tuning, "cache_key", lambda model: key)

    def fake_tune(model):
        calls.append(1)
        return {(1, 6144, 4096): (8, 1024, 4, 1), (16, 6144, 4096): None}, {"qkv@1": {"cfg": [8, 1024, 4, 1]}}

    monkeypatch.setattr(tuning, "tune", fake_tune)
    monkeypatch.setattr(
        tuning, "tune_attention", lambda model: ({4: (2, 64, 4, 2)}, {"attention@4": {"cfg": [2, 64, 4, 2]}})
    )

    Model = SimpleNamespace(kernel_opts=SimpleNamespace(linear_configs={}, attn_configs={}))
    first = tuning.tuned_options(Model, tmp_path)
    Model.kernel_opts.linear_configs, Model.kernel_opts.attn_configs = {}, {}
    second = tuning.tuned_options(Model, tmp_path)
    assert (first["cache_hit"], second["cache_hit"]) == (False, True) and len(calls) == 1
    assert Model.kernel_opts.linear_configs == {(1, 6144, 4096): (8, 1024, 4, 1), (16, 6144, 4096): None}
    assert Model.kernel_opts.attn_configs == {4: (2, 64, 4, 2)} and "attention@4" in second["chosen"]
    assert first["cache_file"] == second["cache_file"] and "nvidia_h200" in first["cache_file"]
    # another GPU model (or Triton version) tunes again, into its own file
    monkeypatch.setattr(tuning, "cache_key", lambda model: {**key, "gpu_name": "NVIDIA A100"})
    third = tuning.tuned_options(Model, tmp_path)
    assert not third["cache_hit"] and len(calls) == 2 and third["cache_file"] != first["cache_file"]


def test_a_tuning_record_seeds_the_cache_of_a_machine_with_the_same_key(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cudagraph_bench.backends.graph_pool import tuning

    key = {"format": 6, "gpu_name": "NVIDIA H200", "triton": "3.6.0"}
    monkeypatch.setattr(tuning, "cache_key", lambda model: key)
    model = SimpleNamespace(args=ModelArgs.from_preset(PRESETS["llama-3.1-8b"]),
                            kernel_opts=SimpleNamespace(linear_configs={}, attn_configs={}))  # fmt: skip
    chosen = {"qkv@16": {"cfg": [64, 128, 4, 4, 2], "us": 18.2}, "gate_up@1": {"cfg": None, "us": 56.3},
              "attention@4": {"cfg": [16, 64, 4, 3], "us": 7.4}}  # fmt: skip
    record = {"cache_file": f"/root/.cache/x/{tuning.cache_path(key).name}", "chosen": chosen,
              "tuned_utc": "2026-12-01T17:38:37Z", "cache_hit": False}  # fmt: skip
    tuning.seed_cache(model, record, tmp_path)
    read = tuning.tuned_options(model, tmp_path)  # no tuning: tune() would need a GPU
    assert read["cache_hit"] and read["tuned_utc"] == "2026-12-01T17:38:37Z" and read["chosen"] == chosen
    assert model.kernel_opts.linear_configs == {(16, 6144, 4096): (64, 128, 4, 4, 2), (1, 14336, 4096): None}
    assert model.kernel_opts.attn_configs == {4: (16, 64, 4, 3)}
    # a record made under another key (here: another GPU model) is refused, naming both files
    other = dict(record, cache_file=tuning.cache_path({**key, "gpu_name": "NVIDIA A100"}).name)
    with pytest.raises(ValueError, match="nvidia_a100.*nvidia_h200"):
        tuning.seed_cache(model, other, tmp_path)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["results/summary.csv"], "results/summary.csv: not a readable result file"),
        (["results/raw/h200/vllm/latency/eager/bs1.json"], "bs1.json: no details.tuning with a cache_file"),
        (["results/raw/h200/graph_pool/check/cudagraph/single.json", "llama-9"], "no model 'llama-9' under `models`"),
    ],
)
def test_seed_tile_cache_names_the_bad_file_or_model_before_touching_the_gpu(argv, says):
    repo = WORKFLOW.parent
    script = WORKFLOW / "offline/seed_tile_cache.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(WORKFLOW), *sys.path]))
    r = subprocess.run([sys.executable, str(script), *argv], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 1 and says in r.stderr, r.stderr[-2000:]


class _Ev:
    """A stand-in for the profiler's kineto event: the methods launch_sequence reads."""

    def __init__(self, name, device, corr, start_us, dur_us):
        from torch.autograd import DeviceType

        self._n, self._d, self._c = name, DeviceType.CUDA if device == "gpu" else DeviceType.CPU, corr
        self._s, self._dur = int(start_us * 1000), int(dur_us * 1000)

    def name(self):
        return self._n

    def device_type(self):
        return self._d

    def linked_correlation_id(self):
        return self._c

    def start_ns(self):
        return self._s

    def duration_ns(self):
        return self._dur


def test_launch_sequence_follows_the_stream_and_the_traced_launch_calls():
    from cudagraph_bench.backends.graph_pool.measure import STEP_MARK, launch_sequence

    events = [
        _Ev(STEP_MARK, "cpu", 0, 100.0, 80.0),
        _Ev(STEP_MARK, "gpu", 0, 104.0, 70.0),  # the marker's device annotation: not an op
        _Ev("aten::mm", "cpu", 0, 101.0, 20.0),
        _Ev("cudaLaunchKernel", "cpu", 7, 105.0, 4.0),
        _Ev("cudaMemcpyAsync", "cpu", 11, 150.0, 3.0),
        # listed out of order: the sequence follows the GPU (one stream); the Triton kernel's
        # driver-API launch is not traced, so it has no issue time
        _Ev("Memcpy DtoD (Device -> Device)", "gpu", 11, 160.0, 1.5),
        _Ev("_gemv_kernel", "gpu", 9, 140.0, 12.25),
        _Ev("sm90_xmma_gemm", "gpu", 7, 110.0, 25.0),
    ]
    seq = launch_sequence(events)["launches"]
    assert seq["kind"] == ["runtime", "driver", "memop"]
    assert [seq["names"][i] for i in seq["name"]] == [
        "sm90_xmma_gemm",
        "_gemv_kernel",
        "Memcpy DtoD (Device -> Device)",
    ]
    assert seq["issue_us"] == [5.0, None, 50.0]
    assert seq["gpu_us"] == [25.0, 12.25, 1.5]
    assert seq["profiled_call_ms"] == 0.08


def test_launch_sequence_without_a_step_marker_has_no_issue_times():
    from cudagraph_bench.backends.graph_pool.measure import launch_sequence

    seq = launch_sequence([_Ev("cudaLaunchKernel", "cpu", 3, 1.0, 1.0), _Ev("k", "gpu", 3, 2.0, 1.0)])["launches"]
    assert seq["kind"] == ["runtime"] and seq["issue_us"] == [None] and seq["profiled_call_ms"] is None


def test_launch_sequence_names_host_waits_inside_the_step_only():
    from cudagraph_bench.backends.graph_pool.measure import STEP_MARK, launch_sequence

    events = [
        _Ev(STEP_MARK, "cpu", 0, 100.0, 50.0),
        _Ev("cudaLaunchKernel", "cpu", 3, 101.0, 1.0),
        _Ev("k", "gpu", 3, 102.0, 1.0),
        _Ev("cudaMemcpy", "cpu", 0, 120.0, 5.0),  # a blocking copy inside the step
        _Ev("cudaMemcpyAsync", "cpu", 0, 125.0, 1.0),  # not blocking
        _Ev("cudaDeviceSynchronize", "cpu", 0, 160.0, 5.0),  # the caller's sync after the step
    ]
    assert launch_sequence(events)["launches"]["host_waits"] == ["cudaMemcpy"]


def test_kernel_summary_leaves_out_the_step_marker():
    """The marker's device-side annotation spans the whole profiled call: counted as a kernel
    it added one kernel and the call's length (64 ms on a 23 ms eager step) to every summary."""
    from cudagraph_bench.backends.graph_pool.measure import STEP_MARK, kernel_summary

    out = kernel_summary([(STEP_MARK, 64_000.0), ("gemv", 3.0), ("gemv", 5.0), ("Memcpy DtoD", 1.0)])
    assert out == {"kernels": 2, "memops": 1, "kernel_ms": 0.008, "by_name": {"gemv": 2},
                   "ms_by_name": {"gemv": 0.008}}  # fmt: skip


def test_prefill_ms_is_the_median_of_warm_prefills(monkeypatch):
    """The first prefill compiles and tunes its kernels: it is run, not counted. (The H200 graph
    cell at bs 1 reports 185 ms, the median of two prefills, one of them cold, which is their
    mean, while its end-to-end latency leaves ~39 ms for the prefill.)"""
    from cudagraph_bench.backends.graph_pool import measure as M

    times = iter([180.0, 5.0, 7.0, 6.0])
    monkeypatch.setattr(M, "prefill_ms", lambda model, tokens: next(times))
    m = measure("latency", "eager", 1, TINY, {"input_len": 4, "output_len": 2}, SETTINGS)["metrics"]
    assert m["prefill_ms"] == 6.0
