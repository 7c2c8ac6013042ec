"""A persistent kernel against the graph pool's kernels: the four batch-1 matmuls of every layer.

Issue 10 asks for the pool's decode step at <= 1.15x its HBM floor. Its whole excess is at kernel
boundaries (graph_pool/kernels.py records the measurements), so this asks what one launch for the
whole chain buys: `_chain` runs 32 layers of qkv (RMSNorm folded, as the pool does), o (+ residual),
gate_up (RMSNorm, SiLU * up) and down (+ residual) at batch 1 as P programs that stay resident,
with a grid barrier (a counter, atomics) between matmuls and each program's rows chosen round robin.
Attention, the embedding and the LM head are left out: the o projection reads the first rows of
qkv. Before each barrier a program asks for the first tile of its next rows into L2 (PRELOAD 2) or
loads it into registers (PRELOAD 1). The same chain through the pool's kernels (kernels.linear, the
tile configs of a committed H200 result, programmatic dependent launch) is the baseline. Both are
timed as CUDA graphs over the same random weights; the floor is their bytes over a device copy's
bandwidth (bytes read + written per second, as the pipeline measures it).

Measured on one H200 in session 10 by this kernel's first version (the same kernel and checks before
this file tidied them; this file itself compiled for sm90 and passed the CPU check, but has not run
on a GPU yet), bs 1, 13.96 GB of weights, floor 3.48 ms at 4,016 GB/s: the
pool's kernels 3.876-3.880 ms, the chain at best 3.757 ms (P 256, 8-row tiles of 1024 columns,
4 warps, L2 prefetch, atomic polling): 3% faster, ~3.3 us per barrier. Register preloads spilled
(4.20 ms); polling with ld.acquire instead of atomics was slower (3.82 against 3.76).

    PYTHONPATH=workflow python benchmarks/persistent_chain.py             # on a CUDA GPU
    TRITON_INTERPRET=1 PYTHONPATH=workflow python benchmarks/persistent_chain.py   # CPU check, tiny

On the CPU interpreter programs run one after another, so it checks the arithmetic with one
program (a barrier of one); on a GPU each configuration is compiled first and run only if all its
programs fit on the GPU at once (a barrier waits for every program).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl
from cudagraph_bench.backends.graph_pool.tuning import _time_graph  # ms per call, one CUDA graph

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
RECORD = Path(__file__).resolve().parents[1] / "results/raw/h200/graph_pool/latency/cudagraph/bs1.json"


@triton.jit
def _poll(BAR, LD_ACQUIRE: tl.constexpr):
    if LD_ACQUIRE:
        cur = tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [BAR], dtype=tl.int32,
                                        is_pure=False, pack=1)  # fmt: skip
    else:
        cur = tl.atomic_add(BAR, 0, sem="acquire")
    return cur


@triton.jit
def _grid_sync(BAR, target, LD_ACQUIRE: tl.constexpr):
    """Arrive at the barrier and wait until `target` programs have (one counter for the launch)."""
    tl.debug_barrier()
    tl.atomic_add(BAR, 1, sem="release")
    cur = _poll(BAR, LD_ACQUIRE)
    while cur < target:
        cur = _poll(BAR, LD_ACQUIRE)
    tl.debug_barrier()


@triton.jit
def _first_tile(W, pid, N, K, GATE_UP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, MODE: tl.constexpr):
    """This program's first weight tile of a matmul: loaded (MODE 1) or asked for into L2 (MODE 2)."""
    rows = W + (pid * BN + tl.arange(0, BN)).to(tl.int64)[:, None] * K
    if MODE == 1:
        w = tl.load(rows + tl.arange(0, BK)[None, :])
        wu = w
        if GATE_UP:
            wu = tl.load(rows + N * K + tl.arange(0, BK)[None, :])
    else:
        lines = rows + (tl.arange(0, BK // 64) * 64)[None, :]  # one element of each 128-byte line
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [lines], dtype=tl.int32,
                                  is_pure=False, pack=1)  # fmt: skip
        if GATE_UP:
            tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [lines + N * K],
                                      dtype=tl.int32, is_pure=False, pack=1)  # fmt: skip
        w = tl.zeros((BN, BK), dtype=W.dtype.element_ty)
        wu = w
    return w, wu


@triton.jit
def _matmul(X, W, Y, w0, wu0, pid, eps, N: tl.constexpr, K: tl.constexpr, P: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, NORM: tl.constexpr, EPI: tl.constexpr, PRELOAD: tl.constexpr):  # fmt: skip
    """Rows pid, pid + P, ... (BN each) of Y = epilogue(X @ W^T / rms(X)): EPI 0 store, 1 add to Y,
    2 silu(gate) * up with W [2N, K]. w0, wu0: the first tile, loaded before the barrier (PRELOAD 1)."""
    rk = tl.arange(0, BK)
    rstd = 1.0
    if NORM:
        ss = tl.zeros((BK,), dtype=tl.float32)
        for k in range(0, K, BK):
            xv = tl.load(X + k + rk).to(tl.float32)
            ss += xv * xv
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / K + eps)
    for blk in range(pid, N // BN, P):
        rn = blk * BN + tl.arange(0, BN)
        wp = W + rn.to(tl.int64)[:, None] * K + rk[None, :]
        acc = tl.zeros((BN, BK), dtype=tl.float32)
        acc_up = tl.zeros((BN, BK), dtype=tl.float32)
        k0 = 0
        if PRELOAD == 1:
            if blk == pid:
                x0 = tl.load(X + rk).to(tl.float32)
                acc += w0.to(tl.float32) * x0[None, :]
                if EPI == 2:
                    acc_up += wu0.to(tl.float32) * x0[None, :]
                k0 = BK
        for k in range(k0, K, BK):
            xv = tl.load(X + k + rk).to(tl.float32)
            acc += tl.load(wp + k).to(tl.float32) * xv[None, :]
            if EPI == 2:
                acc_up += tl.load(wp + N * K + k).to(tl.float32) * xv[None, :]
        y = tl.sum(acc, axis=1) * rstd
        dt = Y.dtype.element_ty
        if EPI == 0:
            tl.store(Y + rn, y.to(dt))
        if EPI == 1:
            tl.store(Y + rn, (y.to(dt).to(tl.float32) + tl.load(Y + rn).to(tl.float32)).to(dt))
        if EPI == 2:
            g = y.to(dt).to(tl.float32)
            u = (tl.sum(acc_up, axis=1) * rstd).to(dt).to(tl.float32)
            tl.store(Y + rn, ((g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32) * u).to(dt))


@triton.jit
def _chain(H, QKV, A, WQKV, WO, W13, W2, BAR, L, eps, D: tl.constexpr, QD: tl.constexpr, FF: tl.constexpr,
           P: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRELOAD: tl.constexpr,
           LD_ACQUIRE: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    n = 0
    w0, wu0 = _first_tile(WQKV, pid, QD, D, False, BN, BK, 1)
    wqkv = WQKV
    wo = WO
    w13 = W13
    w2 = W2
    for layer in range(L):
        _matmul(H, wqkv, QKV, w0, wu0, pid, eps, QD, D, P, BN, BK, True, 0, PRELOAD)
        if PRELOAD:
            w0, wu0 = _first_tile(wo, pid, D, D, False, BN, BK, PRELOAD)
        n += P
        _grid_sync(BAR, n, LD_ACQUIRE)
        _matmul(QKV, wo, H, w0, wu0, pid, eps, D, D, P, BN, BK, False, 1, PRELOAD)
        if PRELOAD:
            w0, wu0 = _first_tile(w13, pid, FF, D, True, BN, BK, PRELOAD)
        n += P
        _grid_sync(BAR, n, LD_ACQUIRE)
        _matmul(H, w13, A, w0, wu0, pid, eps, FF, D, P, BN, BK, True, 2, PRELOAD)
        if PRELOAD:
            w0, wu0 = _first_tile(w2, pid, D, FF, False, BN, BK, PRELOAD)
        n += P
        _grid_sync(BAR, n, LD_ACQUIRE)
        _matmul(A, w2, H, w0, wu0, pid, eps, D, FF, P, BN, BK, False, 1, PRELOAD)
        n += P
        wqkv += QD * D
        wo += D * D
        w13 += 2 * FF * D
        w2 += D * FF
        if PRELOAD:
            if layer + 1 < L:
                w0, wu0 = _first_tile(wqkv, pid, QD, D, False, BN, BK, PRELOAD)
        _grid_sync(BAR, n, LD_ACQUIRE)


def chain(h, qkv, a, weights, bar, cfg, warm=False):
    """Launch (or only compile, warm=True) the chain; cfg = (P, BN, BK, num_warps, PRELOAD, LD_ACQUIRE)."""
    P, BN, BK, warps, preload, ld_acquire = cfg
    wqkv, wo, w13, w2 = weights
    args = (h, qkv, a, wqkv, wo, w13, w2, bar, wqkv.shape[0], 1e-5)
    kw = dict(D=h.shape[0], QD=wqkv.shape[1], FF=w2.shape[2], P=P, BN=BN, BK=BK, PRELOAD=preload,
              LD_ACQUIRE=ld_acquire, num_warps=warps, num_stages=1)  # fmt: skip
    if warm:
        return _chain.warmup(*args, grid=(P,), **kw)
    bar.zero_()
    return _chain[(P,)](*args, **kw)


def resident(kernel, warps: int) -> int:
    """Programs of a compiled kernel that the GPU holds at once (registers, threads, shared memory)."""
    kernel._init_handles()
    props = torch.cuda.get_device_properties(0)
    regs = -(-kernel.n_regs * 32 // 256) * 256 * warps
    per_sm = min(65536 // regs, 2048 // (32 * warps), 32)
    if kernel.metadata.shared:
        per_sm = min(per_sm, (227 * 1024) // kernel.metadata.shared)
    return per_sm * props.multi_processor_count


def reference(h, weights):
    """The chain in float32, rounding to bf16 where the kernels store."""
    wqkv, wo, w13, w2 = [w.float() for w in weights]
    h = h.float().clone()
    D, FF = h.shape[0], w2.shape[2]

    def rs(v):
        return v / torch.sqrt((v * v).mean() + 1e-5)

    def bf(v):
        return v.bfloat16().float()

    for i in range(wqkv.shape[0]):
        q = bf(wqkv[i] @ rs(h))
        h = bf(h + bf(wo[i] @ q[:D]))
        gu = bf(w13[i] @ rs(h))
        g = gu[:FF]
        h = bf(h + bf(w2[i] @ bf(bf(g / (1 + torch.exp(-g))) * gu[FF:])))
    return h


def copy_bandwidth_gbps(dev) -> float:
    x = torch.empty(1 << 28, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    ms = _time_graph(lambda i: y.copy_(x), reps=3)
    return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9


def pool_options():
    """The pool's kernel options with the tile configs of a committed H200 cell."""
    from cudagraph_bench.backends.graph_pool import kernels as K

    ko = json.loads(RECORD.read_text())["details"]["kernel_options"]
    configs = {ast.literal_eval(k): (tuple(v) if v else None) for k, v in ko["linear_configs"].items()}
    return K, K.KernelOptions(pdl=ko["pdl"], pdl_late=ko["pdl_late"], prefetch_mb=ko["prefetch_mb"],
                              gemv_m1=ko["gemv_m1"], linear_configs=configs)  # fmt: skip


def main() -> None:
    dev = "cpu" if INTERPRET else "cuda"
    if INTERPRET:
        L, D, QD, FF = 2, 64, 96, 128
        configs = [(1, 8, 32, 4, preload, 0) for preload in (0, 1)]
    else:
        L, D, QD, FF = 32, 4096, 6144, 14336  # Llama-3.1-8B
        shapes = [(256, 8, 1024, 4), (256, 8, 512, 8), (512, 4, 1024, 2), (128, 16, 1024, 8)]
        configs = [(*s, preload, ld) for s in shapes for preload in (0, 2) for ld in (0, 1)]
    torch.manual_seed(0)
    weights = [torch.randn(L, rows, k, device=dev).bfloat16() / k**0.5
               for rows, k in ((QD, D), (D, D), (2 * FF, D), (D, FF))]  # fmt: skip
    h0 = torch.randn(D, device=dev).bfloat16()
    qkv = torch.empty(QD, device=dev, dtype=torch.bfloat16)
    a = torch.empty(FF, device=dev, dtype=torch.bfloat16)
    bar = torch.zeros(1, device=dev, dtype=torch.int32)
    ref = reference(h0, weights)
    runnable = []
    for cfg in configs:
        if not INTERPRET and resident(chain(h0, qkv, a, weights, bar, cfg, warm=True), cfg[3]) < cfg[0]:
            print(f"skipped {cfg}: its programs do not all fit on the GPU at once")
            continue
        h = h0.clone()
        chain(h, qkv, a, weights, bar, cfg)
        err = ((h.float() - ref).norm() / ref.norm()).item()
        print(f"check {cfg}: relative error {err:.1e} against float32")
        if err > 0.05:
            raise SystemExit(f"{cfg}: relative error {err:.2e}: the chain computes something else")
        runnable.append(cfg)
    if INTERPRET:
        print("interpreter check passed")
        return
    K, opts = pool_options()
    hb = h0.clone()[None]

    def per_matmul(_):
        for i in range(L):
            q = K.linear(hb, weights[0][i], opts, rms_norm=True, eps=1e-5)
            K.linear(q[:, :D], weights[1][i], opts, residual=hb, out=hb)
            x = K.linear(hb, weights[2][i], opts, rms_norm=True, eps=1e-5, silu_mul=True)
            K.linear(x, weights[3][i], opts, residual=hb, out=hb)

    bw = copy_bandwidth_gbps(dev)
    floor = sum(w.numel() * w.element_size() for w in weights) / (bw * 1e9) * 1e3
    base = _time_graph(per_matmul, reps=3)
    print(f"floor {floor:.3f} ms (copy bandwidth {bw:,.0f} GB/s); the pool's kernels {base:.3f} ms")
    print("P | BN | BK | warps | preload | ld.acquire | chain ms | chain / pool's kernels | chain / floor")
    for cfg in runnable:
        h = h0.clone()
        ms = _time_graph(lambda _, h=h, cfg=cfg: chain(h, qkv, a, weights, bar, cfg), reps=3)
        print(" | ".join(map(str, cfg)) + f" | {ms:.3f} | {ms / base:.3f} | {ms / floor:.3f}")


if __name__ == "__main__":
    main()
