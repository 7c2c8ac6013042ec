"""The torch.compile peer on the CPU: the model decodes what a full forward computes, and its
eager cells measure; the compiled modes are CUDA-only and say so."""

import os

import pytest
import torch
from cudagraph_bench.backends import torch_compile as tc
from cudagraph_bench.backends.graph_pool.measure import COLD_CACHES
from cudagraph_bench.backends.graph_pool.model import ModelArgs
from cudagraph_bench.errors import Unsupported

TINY = dict(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, intermediate_size=128,
            vocab_size=100, max_seq_len=32, dtype="float32", rope_theta=10000.0, norm_eps=1e-5)  # fmt: skip
SETTINGS = {"seed": 0, "warmup_steps": 2, "timed_steps": 5, "warmup_repeats": 0, "repeats": 2}


def test_incremental_decode_matches_a_full_forward():
    args = ModelArgs.from_preset(TINY)
    m = tc.build(args, torch.device("cpu"), batch=2, seed=0)
    tokens = torch.randint(0, args.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = m(tokens, torch.arange(9))[:, -1].clone()
        m2 = tc.build(args, torch.device("cpu"), batch=2, seed=0)
        m2(tokens[:, :8], torch.arange(8))
        step = tc.decode_one_token(m2, tokens[:, 8:9], torch.tensor([8]))
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_eager_latency_cell_on_the_cpu_names_units():
    out = tc.measure("latency", "eager", 2, TINY, {"input_len": 4, "output_len": 3}, SETTINGS)
    m = out["metrics"]
    assert m["decode_step_ms_p10"] <= m["decode_step_ms_median"] <= m["decode_step_ms_p90"]
    assert m["output_tokens_per_s"] == pytest.approx(2 * 3 / m["e2e_latency_s_mean"])
    assert len(out["details"]["e2e_latency_s"]) == 2
    assert out["details"]["kv_cache_len"] == tc.cache_len_for(ModelArgs.from_preset(TINY), 4, 3, 2 + 5) == 32  # capped
    assert m["step_host_ms_median"] > 0  # the host's time to issue each timed step


def test_startup_eager_and_cuda_only_modes(monkeypatch, tmp_path):
    # the startup cell compiles with empty caches of its own, not the node's
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    seen = []
    build = tc.build
    monkeypatch.setattr(
        tc, "build", lambda *a, **k: seen.append(os.environ["TORCHINDUCTOR_CACHE_DIR"]) or build(*a, **k)
    )
    out = tc.measure("startup", "eager", None, TINY, {}, SETTINGS)
    assert out["metrics"]["startup_s"] > 0 and out["details"]["compile_cache"] == COLD_CACHES
    assert len(seen) == 1 and seen[0] != str(tmp_path) and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
    # a latency cell keeps the node's caches
    tc.measure("latency", "eager", 1, TINY, {"input_len": 4, "output_len": 3}, SETTINGS)
    assert seen[1] == str(tmp_path)
    if torch.cuda.is_available():
        pytest.skip("the refusals below are for machines without CUDA")
    for mode in ("compile_nograph", "cudagraph"):
        with pytest.raises(Unsupported, match="CUDA"):
            tc.measure("latency", mode, 1, TINY, {"input_len": 4, "output_len": 3}, SETTINGS)


@pytest.mark.parametrize("t", [1, 3])
def test_grouped_attention_equals_attention_over_repeated_kv_heads(t):
    """Folding a kv head's query heads into the query length is the same attention as gpt-fast's
    repeat_interleave of K and V, for a decode step (t=1) and a prefill with a causal mask (t=3)."""
    g = torch.Generator().manual_seed(0)
    b, kv, rep, s, d = 2, 3, 4, 7, 8
    q = torch.randn(b, kv * rep, t, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, kv, s, d, generator=g, dtype=torch.float64) for _ in range(2))
    pos = torch.arange(s - t, s) - 1  # the t query positions; the cache's last slot stays masked
    mask = torch.tril(torch.ones(s, s, dtype=torch.bool))[None, None, pos]
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), attn_mask=mask
    )
    got = tc.grouped_attention(q, k, v, mask)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_kv_cache_is_sized_to_the_request_as_gpt_fast_does():
    args = ModelArgs.from_preset(TINY | {"max_seq_len": 1024})
    assert tc.cache_len_for(args, 256, 64, 60) == 384  # 256 + 64 + 1 -> a multiple of 128
    assert tc.cache_len_for(args, 256, 64, 200) == 512  # the timed steps need more than the output
    assert tc.cache_len_for(args, 1000, 64, 60) == 1024  # never past max_seq_len
