"""Triton kernels for the decode step: five launches per transformer block.

    linear(norm)            qkv = rmsnorm(h) @ Wqkv^T         RMSNorm fused into the matmul
    decode_attention        rope(q, k); cache[row, pos] = k, v; o = softmax(q K^T) V over 0..pos
    linear(residual)        h += o @ Wo^T                     residual add fused, in place
    linear(norm, silu_mul)  a = silu(x @ Wg^T) * (x @ Wu^T)   gate and up in one pass
    linear(residual)        h += a @ Wd^T

Decode is a stream of weight bytes: at batch 1..64 every matmul is memory-bound,
so the kernels are shaped to keep many weight tiles in flight (small BLOCK_N,
deep software pipelining) rather than to maximise arithmetic. Each kernel reads
only device tensors (positions, cache rows, lengths) for anything that changes
between steps, so one captured graph replays correctly for every step.

M == 1 runs a CUDA-core GEMV (16-byte loads, no shared memory), which streams weights faster
than a 16-row tensor-core tile padded from one row; M >= 2 runs the tensor-core kernel.

RMSNorm fusion: the norm's weight g is folded into the next matmul's weight at build time
(model.fold_norm_weights), and rms(x) is a per-row scalar, so rmsnorm(x) @ W^T equals
(x @ (W diag g)^T) / rms(x): the sum of squares accumulates in the loop that streams x (the
GEMV squares x; the tensor-core kernel takes the diagonal of x @ x^T) and the epilogue scales
each row. No extra pass, no extra kernel.

Programmatic dependent launch (`pdl=True`, Hopper and later): each kernel waits (`gdc_wait`)
before touching anything an earlier kernel writes, and lets the next one launch once its own
main loop is done (`pdl_late`; triggering at the start was measured slower on an H100); with
`prefetch_mb` a kernel asks for the head of its weight rows into L2 while it waits. Nothing
before the wait writes memory or reads activations. Decode attention reads little and waits on
latency, so with `attn_prefetch_mb` its programs also ask for the head of the output projection's
weights, the next matmul, into L2: HBM starts on that stream while attention runs.

Where the rest of the step's time goes (H200, whole graph steps at bs 1/4/16/64, 4.28/4.57/4.55/5.36
ms with these kernels): with every gdc_wait() removed (wrong outputs, timing only) they run
4.06/4.48/4.39/5.21 ms, and with the trigger also moved to each kernel's start, so that all kernels
overlap, 3.56/3.50/3.64/4.92 ms, the HBM floor at bs 1-16: each kernel streams at full speed, and the
excess is the waits at kernel boundaries. Measured and rejected: waiting on a per-kernel counter of
written tiles instead of gdc_wait() (correct, 4-8% slower), and triggering right after the wait
(up to 26% slower at bs 16): programs that launch early and wait take the SMs' room from the kernel
still running. Also measured and rejected (ac450d6, one H200, whole graph steps against these kernels
at 4.34-4.37/4.55-4.62/4.51-4.53/5.37-5.38 ms): the split attention merged by its last split behind a
counter instead of the combine kernel, 4.36/4.66/4.51/5.37 ms (no launch saved is worth the serial merge
at the tail); every matmul asking for the head of the next one's weights into L2 after its own stream,
slower at every size and more so the more it asks for (bs 16: 4.60/4.67/4.82 ms at 4/8/16 MB): those
requests compete with the kernel's last loads, which the next kernel waits on. A persistent kernel
(benchmarks/persistent_chain.py) that runs the 32 layers' four batch-1 matmuls (qkv, o, gate_up, down; no
attention) in one launch, 256 programs with a grid barrier between matmuls, took 3.76 ms against 3.88 for
these kernels launched one per matmul (same weights, one H200; their HBM floor ~3.33 ms): the barriers
still cost ~3.3 us each, so a megakernel would need the next weights streaming across each barrier to
reach the floor (its register preload spilled and was slower, 4.20 ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from .padding import padded_size

try:  # Hopper grid-dependency control; absent from old Triton builds
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - depends on the Triton build
    gdc_launch_dependents = gdc_wait = None

EPI_NONE, EPI_RESIDUAL, EPI_SILU_MUL = 0, 1, 2


@dataclass
class KernelOptions:
    """Launch choices shared by every kernel of one model (all static per process).

    pdl: programmatic dependent launch (sm90+); pdl_late: let the next kernel launch only once
    this one's main loop is done (default: at its start). prefetch_mb: with pdl, each matmul asks
    for the first ~prefetch_mb MB of its weights (spread over all rows) into L2 before it
    waits on the previous kernel. gemv_m1: a CUDA-core GEMV for M == 1 instead of the
    tensor-core kernel. attn_splits: sequence splits of decode attention (None: by batch).
    linear_configs: (bucket, N, K) -> (BLOCK_N, BLOCK_K, num_warps, num_stages),
    where bucket is the BLOCK_M used (1 for the GEMV; None there: use the tensor-core
    kernel at M == 1 for this shape); overrides the heuristic.
    attn_configs: batch size -> (num_splits, BLOCK_S, num_warps, num_stages) of decode attention
    (tuning.tune_attention); a batch size without one uses attn_block_s / attn_splits.
    size_classes: the batch sizes configs are chosen by (the graph pool's capture sizes, set by
    the pool): a batch of n takes every config of the size its graph runs at
    (padding.padded_size), so an eager step of n runs the very kernels of the padded graph and
    its output rows are bit-equal; above the largest, or without classes, n's own.
    attn_prefetch_mb: decode attention's programs, before they wait on the qkv matmul, ask for the
    first ~this many MB of the output projection's weights into L2 (decode_attention(next_w=...)):
    attention reads little and waits on latency, so HBM has room to start the next matmul's stream.
    """

    pdl: bool = False
    pdl_late: bool = False
    prefetch_mb: float = 0.0
    gemv_m1: bool = False
    attn_block_s: int = 64
    attn_splits: int | None = None
    linear_configs: dict = field(default_factory=dict)
    attn_configs: dict = field(default_factory=dict)
    size_classes: tuple = ()
    attn_prefetch_mb: float = 0.0

    def config_batch(self, n: int) -> int:
        """The batch size whose configs a batch of n uses (size_classes)."""
        if not self.size_classes:
            return n
        return padded_size(n, self.size_classes) or n

    def as_dict(self) -> dict:
        return {
            "pdl": self.pdl,
            "pdl_late": self.pdl_late,
            "prefetch_mb": self.prefetch_mb,
            "gemv_m1": self.gemv_m1,
            "attn_block_s": self.attn_block_s,
            "attn_splits": self.attn_splits,
            "linear_configs": {str(k): v for k, v in self.linear_configs.items()},
            "attn_configs": {str(k): v for k, v in self.attn_configs.items()},
            "size_classes": list(self.size_classes),
            "attn_prefetch_mb": self.attn_prefetch_mb,
        }


def pdl_supported(device: torch.device | None = None) -> bool:
    """True where programmatic dependent launch can be used (CUDA sm90+, Triton has GDC)."""
    if gdc_wait is None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def default_kernel_options(device: torch.device | str | None = None) -> KernelOptions:
    """The launch options measured fastest on an H100 (whole decode step, graph replays): the GEMV at
    M == 1, and on sm90+ programmatic dependent launch with the trigger after the main loop plus an
    8 MB L2 prefetch; on the H200, decode attention's 8 MB prefetch of the output projection's
    weights (whole step, three machines: batch 16 2.5-3.1% faster, batch 4 0.5-1.2%, batch 1
    within 1.1%, batch 64 0.1-0.5% slower; 16-32 MB slower than 8). Tile configs come
    from tuning.tuned_options (measured per GPU model, cached); without them linear_config() uses
    its heuristic."""
    pdl = pdl_supported(device)
    return KernelOptions(gemv_m1=True, pdl=pdl, pdl_late=True, prefetch_mb=8.0 if pdl else 0.0,
                         attn_prefetch_mb=8.0 if pdl else 0.0)  # fmt: skip


@triton.jit
def _l2_prefetch(ptrs):
    """Ask for the 128-byte line of every pointer into L2 (PTX prefetch.global.L2): no register
    result, no write; the dummy result keeps the asm from being dropped."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)  # fmt: skip


@triton.jit
def _prefetch_rows(W, pid_n, N, K, GATE_UP: tl.constexpr, BLOCK_N: tl.constexpr, LINES: tl.constexpr):
    """Ask for the first LINES 128-byte lines of this program's BLOCK_N weight rows into L2.

    Touches no activation and writes nothing, so it may run before gdc_wait()."""
    rows = tl.minimum(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N - 1)
    cols = tl.arange(0, LINES) * (1024 // W.dtype.element_ty.primitive_bitwidth)  # one element per line
    ptrs = W + rows.to(tl.int64)[:, None] * K + cols[None, :]
    _l2_prefetch(ptrs)
    if GATE_UP:
        _l2_prefetch(ptrs + N * K)


@triton.jit
def _next_lines(prog, per, total, nk, nklen, nlines, LINE: tl.constexpr, BLOCK: tl.constexpr):
    """Element offsets, in a weight [rows, nk], of one program's share of the lines a matmul on it
    reads first (LINE elements each): line i of `total` is line i % nlines of (row, split) =
    divmod(i // nlines, splits), at column split * nklen of that row (nklen: the split-K slice).
    Program `prog` takes lines [prog * per, prog * per + per); lanes past them repeat line 0."""
    j = tl.arange(0, BLOCK)
    i = prog * per + j
    i = tl.where((j < per) & (i < total), i, 0)
    t = i // nlines
    splits = nk // nklen
    return (t // splits).to(tl.int64) * nk + (t % splits) * nklen + (i % nlines) * LINE


@triton.jit
def _split_k_reduce(WS, SS, CNT, tile, pid_s, acc, acc_up, ss,
                    HAS_NORM: tl.constexpr, GATE_UP: tl.constexpr, SPLIT_K: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """Split-K: store this program's partial sums; the last of a tile's SPLIT_K programs to finish
    adds all of them up, in split order (the same bits whichever program comes last), and resets
    the tile's counter for the next launch. Returns (is_last, acc, acc_up, ss)."""
    TILE: tl.constexpr = BLOCK_M * BLOCK_N
    offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    parts = WS + tile.to(tl.int64) * (SPLIT_K * TILE * (2 if GATE_UP else 1))
    tl.store(parts + pid_s * TILE + offs, acc)
    if GATE_UP:
        tl.store(parts + (SPLIT_K + pid_s) * TILE + offs, acc_up)
    if HAS_NORM:
        tl.store(SS + (tile * SPLIT_K + pid_s) * BLOCK_M + tl.arange(0, BLOCK_M), ss)
    tl.debug_barrier()  # every thread's partial is written before the counter says so
    done = tl.atomic_add(CNT + tile, 1, sem="acq_rel")
    is_last = done == SPLIT_K - 1
    if is_last:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        ss = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for s in tl.static_range(SPLIT_K):
            acc += tl.load(parts + s * TILE + offs)
            if GATE_UP:
                acc_up += tl.load(parts + (SPLIT_K + s) * TILE + offs)
            if HAS_NORM:
                ss += tl.load(SS + (tile * SPLIT_K + s) * BLOCK_M + tl.arange(0, BLOCK_M))
        tl.atomic_xchg(CNT + tile, 0)
    return is_last, acc, acc_up, ss


@triton.jit
def _linear_kernel(
    X, W, Y, RES, WS, SS, CNT,
    M, N, K,
    stride_xm, stride_ym, stride_rm,
    eps,
    HAS_NORM: tl.constexpr, EPILOGUE: tl.constexpr, EVEN_K: tl.constexpr,
    USE_PDL: tl.constexpr, PDL_LATE: tl.constexpr, PREFETCH_LINES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    """Y[M, N] = epilogue(rms(X) * (X[M, K] @ W[N, K]^T)) on tensor cores (M padded to BLOCK_M >= 16).

    HAS_NORM: RMSNorm of X with its weight folded into W (model.fold_norm_weights): the rows'
    sums of squares are the diagonal of x @ x^T, a second tensor-core product on the x tile the
    main one reads, and the epilogue scales rows by 1/rms. So x feeds dots only: with x^2 added up
    elementwise in the loop instead, qkv at M = 16 measured 1.5x slower on the H200.
    EPILOGUE 1: Y = RES + acc (RES may alias Y). EPILOGUE 2: W is [2N, K] (gate rows
    then up rows) and Y = silu(gate) * up.
    SPLIT_K > 1: program (m, n, s) streams the s-th of SPLIT_K equal slices of K (K divisible by
    SPLIT_K * BLOCK_K), so a matmul with few output tiles still keeps every SM streaming weights;
    the slices meet in _split_k_reduce (WS, SS: fp32 scratch; CNT: per-tile counters, zero).
    """
    # m varies fastest so programs that share a weight tile run together (L2 reuse for M > BLOCK_M).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    k_len = K // SPLIT_K
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_mask = rm < M
    n_mask = rn < N
    w_ptrs = W + rn.to(tl.int64)[None, :] * K + (pid_s * k_len + rk)[:, None]  # [BLOCK_K, BLOCK_N]: a W^T tile
    if USE_PDL:
        if PREFETCH_LINES > 0:
            if pid_m == 0:
                if pid_s == 0:
                    _prefetch_rows(W, pid_n, N, K, EPILOGUE == 2, BLOCK_N, PREFETCH_LINES)
        if not PDL_LATE:
            gdc_launch_dependents()
        gdc_wait()
    x_ptrs = X + rm[:, None] * stride_xm + (pid_s * k_len + rk)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    xx = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)  # HAS_NORM: x @ x^T; its diagonal after the loop
    for k in range(0, k_len, BLOCK_K):
        if EVEN_K:
            x = tl.load(x_ptrs, mask=m_mask[:, None], other=0.0)
            w = tl.load(w_ptrs, mask=n_mask[None, :], other=0.0)
        else:
            k_mask = (k + rk) < K
            x = tl.load(x_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=n_mask[None, :] & k_mask[:, None], other=0.0)
        if HAS_NORM:
            xx = tl.dot(x, tl.trans(x), xx)
        acc = tl.dot(x, w, acc)
        if EPILOGUE == 2:
            if EVEN_K:
                wu = tl.load(w_ptrs + N * K, mask=n_mask[None, :], other=0.0)
            else:
                wu = tl.load(w_ptrs + N * K, mask=n_mask[None, :] & k_mask[:, None], other=0.0)
            acc_up = tl.dot(x, wu, acc_up)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if USE_PDL:
        if PDL_LATE:
            gdc_launch_dependents()
    eye = tl.arange(0, BLOCK_M)[:, None] == tl.arange(0, BLOCK_M)[None, :]
    ss = tl.sum(tl.where(eye, xx, 0.0), axis=1)  # zeros without the norm
    out_mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K > 1:
        tile = pid_m * tl.num_programs(1) + pid_n
        is_last, acc, acc_up, ss = _split_k_reduce(WS, SS, CNT, tile, pid_s, acc, acc_up, ss,
                                                   HAS_NORM, EPILOGUE == 2, SPLIT_K, BLOCK_M, BLOCK_N)  # fmt: skip
        out_mask = out_mask & is_last
    if HAS_NORM:
        rstd = 1.0 / tl.sqrt(ss / K + eps)
        acc = acc * rstd[:, None]
        acc_up = acc_up * rstd[:, None]
    if EPILOGUE == 1:
        r = tl.load(RES + rm[:, None] * stride_rm + rn[None, :], mask=out_mask, other=0.0)
        acc = acc.to(Y.dtype.element_ty).to(tl.float32) + r.to(tl.float32)
    if EPILOGUE == 2:
        # silu on the rounded gate, as the unfused reference does it
        gate = acc.to(Y.dtype.element_ty).to(tl.float32)
        up = acc_up.to(Y.dtype.element_ty).to(tl.float32)
        acc = (gate / (1.0 + tl.exp(-gate))).to(Y.dtype.element_ty).to(tl.float32) * up
    tl.store(Y + rm[:, None] * stride_ym + rn[None, :], acc.to(Y.dtype.element_ty), mask=out_mask)


@triton.jit
def _gemv_kernel(
    X, W, Y, RES, WS, SS, CNT,
    N, K,
    eps,
    HAS_NORM: tl.constexpr, EPILOGUE: tl.constexpr, EVEN_K: tl.constexpr,
    USE_PDL: tl.constexpr, PDL_LATE: tl.constexpr, PREFETCH_LINES: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    """The M == 1 case on CUDA cores: 16-byte loads along K, one reduction at the end.
    SPLIT_K > 1: program (n, s) streams the s-th slice of K, as in _linear_kernel."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    k_len = K // SPLIT_K
    k0 = pid_s * k_len
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    n_mask = rn < N
    w_ptrs = W + rn.to(tl.int64)[:, None] * K + (k0 + rk)[None, :]  # [BLOCK_N, BLOCK_K]
    if USE_PDL:
        if PREFETCH_LINES > 0:
            if pid_s == 0:
                _prefetch_rows(W, pid_n, N, K, EPILOGUE == 2, BLOCK_N, PREFETCH_LINES)
        if not PDL_LATE:
            gdc_launch_dependents()
        gdc_wait()
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    ss = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k in range(k0, k0 + k_len, BLOCK_K):
        if EVEN_K:
            x = tl.load(X + k + rk).to(tl.float32)
            w = tl.load(w_ptrs, mask=n_mask[:, None], other=0.0)
        else:
            k_mask = (k + rk) < K
            x = tl.load(X + k + rk, mask=k_mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptrs, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
        if HAS_NORM:
            ss += x * x
        acc += w.to(tl.float32) * x[None, :]
        if EPILOGUE == 2:
            if EVEN_K:
                wu = tl.load(w_ptrs + N * K, mask=n_mask[:, None], other=0.0)
            else:
                wu = tl.load(w_ptrs + N * K, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
            acc_up += wu.to(tl.float32) * x[None, :]
        w_ptrs += BLOCK_K
    if USE_PDL:
        if PDL_LATE:
            gdc_launch_dependents()
    y = tl.sum(acc, axis=1)
    y_up = tl.sum(acc_up, axis=1)
    ss_all = tl.sum(ss, axis=0)
    if SPLIT_K > 1:
        # the reduction's tiles are [1, BLOCK_N]: the same code as the tensor-core kernel's
        is_last, y2, y2_up, ss2 = _split_k_reduce(WS, SS, CNT, pid_n, pid_s, y[None, :], y_up[None, :],
                                                  ss_all + tl.zeros((1,), dtype=tl.float32),
                                                  HAS_NORM, EPILOGUE == 2, SPLIT_K, 1, BLOCK_N)  # fmt: skip
        y, y_up, ss_all = tl.sum(y2, axis=0), tl.sum(y2_up, axis=0), tl.sum(ss2, axis=0)
        n_mask = n_mask & is_last
    if HAS_NORM:
        rstd = 1.0 / tl.sqrt(ss_all / K + eps)
        y = y * rstd
        y_up = y_up * rstd
    if EPILOGUE == 1:
        r = tl.load(RES + rn, mask=n_mask, other=0.0)
        y = y.to(Y.dtype.element_ty).to(tl.float32) + r.to(tl.float32)
    if EPILOGUE == 2:
        gate = y.to(Y.dtype.element_ty).to(tl.float32)
        up = y_up.to(Y.dtype.element_ty).to(tl.float32)
        y = (gate / (1.0 + tl.exp(-gate))).to(Y.dtype.element_ty).to(tl.float32) * up
    tl.store(Y + rn, y.to(Y.dtype.element_ty), mask=n_mask)


def _cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host's launch arithmetic. triton.cdiv and triton.next_power_of_2 are
    constexpr-function wrappers, ~3 us a call: a dozen per layer in every eager step."""
    return -(-a // b)


def _next_pow2(n: int) -> int:
    """The smallest power of two >= n, as triton.next_power_of_2 (which gives 0 for 0)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


_SM_COUNT: dict[int, int] = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def _block_k(K: int, want: int) -> int:
    bk = want
    while bk > 16 and K % bk:
        bk //= 2
    return bk


def config_split(cfg: tuple) -> int:
    """SPLIT_K of a tuned config (BLOCK_N, BLOCK_K, num_warps, num_stages[, SPLIT_K]); 1 when absent."""
    return cfg[4] if len(cfg) > 4 else 1


def fits_k(K: int, cfg: tuple) -> bool:
    """Whether K divides into the config's SPLIT_K slices of whole BLOCK_K steps."""
    return K % (cfg[1] * config_split(cfg)) == 0


def linear_config(M: int, N: int, K: int, opts: KernelOptions, n_sms: int = 132) -> tuple[int, int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, SPLIT_K) for one matmul; BLOCK_M 1 means
    the GEMV kernel. A tuned config is (BLOCK_N, BLOCK_K, num_warps, num_stages[, SPLIT_K])."""
    bm = 1 if (M == 1 and opts.gemv_m1) else min(64, max(16, _next_pow2(M)))
    if bm == 1 and (1, N, K) in opts.linear_configs and opts.linear_configs[(1, N, K)] is None:
        bm = 16  # measured: the tensor-core kernel is faster for this shape even at M == 1
    tuned = opts.linear_configs.get((bm, N, K))
    if tuned is not None:
        if not fits_k(K, tuned):
            raise ValueError(f"tile config {tuple(tuned)} for ({bm}, {N}, {K}): K must divide by SPLIT_K * BLOCK_K")
        bn, bk, warps, stages = tuned[:4]
        return bm, bn, bk, warps, stages, config_split(tuned)
    if bm == 1:
        # >= ~2 programs per SM, each streaming BLOCK_N full rows
        bn = 16 if N >= 16 * n_sms else 8
        return 1, bn, _block_k(K, 512), 4, 1, 1
    m_blocks = _cdiv(M, bm)
    bn = 64
    while bn > 16 and m_blocks * _cdiv(N, bn) < 2 * n_sms:
        bn //= 2
    bk = _block_k(K, 256 if bm <= 16 else 128)
    return bm, bn, bk, 4, 4, 1


_SCRATCH: dict[tuple[str, int | None, str], torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []  # outgrown buffers: captured graphs may still point at them


def _scratch(device: torch.device, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """The first `numel` elements of a buffer kept per device, grown (never shrunk) outside capture."""
    key = (device.type, device.index, name)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < numel:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("split-K scratch must be allocated before graph capture: run the step once eagerly")
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(numel, 1 << 16), dtype=dtype, device=device)
        _SCRATCH[key] = buf
    return buf[:numel]


def split_k_buffers(device: torch.device, tiles: int, partials: int, rows: int) -> tuple[torch.Tensor, ...]:
    """(partial sums fp32 [partials], x^2 sums fp32 [rows], counters int32 [tiles]) for one split-K launch.

    One set per device serves every launch: launches on a stream run one after another (with
    programmatic dependent launch, a kernel touches them only after the previous one has
    finished), each launch writes its partials before reading them, and its last programs
    leave the counters zero again. So the eager step allocates nothing per matmul, and a
    captured graph holds no scratch of its own. Allocated outside capture (a graph's warm-up
    call comes first): memory made during a capture belongs to that graph."""
    return (_scratch(device, "partials", partials, torch.float32), _scratch(device, "rows", rows, torch.float32),
            _scratch(device, "counters", tiles, torch.int32))  # fmt: skip


def prefetch_lines(rows: int, K: int, elem_bytes: int, opts: KernelOptions) -> int:
    """128-byte lines per weight row to prefetch so that all rows together take ~prefetch_mb MB."""
    if not opts.pdl or opts.prefetch_mb <= 0:
        return 0
    want = int(opts.prefetch_mb * 2**20 / (rows * 128))
    cap = min(64, K * elem_bytes // 128)
    lines = 1
    while lines * 2 <= min(want, cap):
        lines *= 2
    return lines if want >= 1 else 0


NO_LINES = (0, 0, 1, 1, 1, 0)  # weight_lines' plan when there is nothing to prefetch (BLOCK 0)


def weight_lines(M: int, w: torch.Tensor, programs: int, mb: float, opts: KernelOptions,
                 n_sms: int) -> tuple[int, int, int, int, int, int]:  # fmt: skip
    """(per, total, nk, nklen, nlines, BLOCK) of _next_lines: the first ~mb MB that linear() on w
    (no silu_mul) with M rows reads first, the first nlines lines of every row at the start of
    each split-K slice, shared out over `programs`. BLOCK 0: nothing (mb 0, or under a line per row)."""
    rows, nk = w.shape
    split = linear_config(opts.config_batch(M), rows, nk, opts, n_sms)[5]
    nklen = nk // split
    nlines = min(int(mb * 2**20 / (rows * split * 128)), max(1, nklen * w.element_size() // 128))
    if nlines < 1:
        return NO_LINES
    total = rows * split * nlines
    per = _cdiv(total, programs)
    return per, total, nk, nklen, nlines, _next_pow2(per)


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    opts: KernelOptions,
    *,
    rms_norm: bool = False,
    eps: float | None = None,
    residual: torch.Tensor | None = None,
    silu_mul: bool = False,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """epilogue(x / rms(x) @ w.T) for x [M, K] (unit column stride), w [N', K] contiguous.

    rms_norm: normalise the rows of x first, with the model's epsilon `eps`; the norm's weight
    must already be folded into w.
    residual: [M, N] added after the matmul (may be `out`, for an in-place update).
    silu_mul: w holds gate rows then up rows ([2N, K]); returns silu(gate) * up [M, N].
    """
    if rms_norm and eps is None:
        raise ValueError("linear(rms_norm=True) needs eps, the model's norm_eps")
    eps = 0.0 if eps is None else eps  # unused without the norm
    if x.stride(1) != 1:
        x = x.contiguous()
    M, K = x.shape
    N = w.shape[0] // 2 if silu_mul else w.shape[0]
    if out is None:
        out = torch.empty((M, N), device=x.device, dtype=out_dtype or x.dtype)
    epilogue = EPI_SILU_MUL if silu_mul else (EPI_RESIDUAL if residual is not None else EPI_NONE)
    r = residual if residual is not None else out  # dummy pointer when unused
    bm, bn, bk, warps, stages, split = linear_config(opts.config_batch(M), N, K, opts, _num_sms(x.device))
    flags = dict(HAS_NORM=rms_norm, EPILOGUE=epilogue, EVEN_K=K % bk == 0, USE_PDL=opts.pdl,
                 PDL_LATE=opts.pdl_late, PREFETCH_LINES=prefetch_lines(w.shape[0], K, w.element_size(), opts))  # fmt: skip
    extra = {"launch_pdl": True} if opts.pdl else {}
    grid = (_cdiv(M, bm) if bm > 1 else 1, _cdiv(N, bn), split)
    if split > 1:
        tiles = grid[0] * grid[1]
        ws, ss, cnt = split_k_buffers(x.device, tiles, tiles * split * bm * bn * (2 if silu_mul else 1),
                                      tiles * split * bm)  # fmt: skip
    else:
        ws = ss = cnt = out  # unused
    if bm == 1:
        _gemv_kernel[grid[1:]](
            x, w, out, r, ws, ss, cnt, N, K, eps, **flags, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split,
            num_warps=warps, num_stages=stages, **extra,
        )  # fmt: skip
    else:
        _linear_kernel[grid](
            x, w, out, r, ws, ss, cnt, M, N, K, x.stride(0), out.stride(0), r.stride(0), eps,
            **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, num_warps=warps, num_stages=stages,
            **extra,
        )  # fmt: skip
    return out


@triton.jit
def _decode_attention_kernel(
    QKV, POS, ROWS, COS, SIN, KC, VC, OUT, MID_O, MID_LSE, NW,
    stride_qkv, stride_o, stride_kc_r, stride_kc_s,
    split_len, qk_scale, nw_per, nw_total, nw_k, nw_klen, nw_lines,
    H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, NUM_SPLITS: tl.constexpr,
    USE_PDL: tl.constexpr, NW_BLOCK: tl.constexpr,
):  # fmt: skip
    """One (sequence, kv head, split): RoPE on q and the new k, the new k/v written into
    the cache at (row, pos), then online softmax over cached positions [0, pos) of this
    split plus the new token itself (kept in registers, so no read-after-write on the cache).

    Positions beyond a sequence's length are never loaded: the loop bound comes from POS,
    so the cost follows the real context length while the launch shape stays static.
    NW_BLOCK > 0: first, this program asks for its share (_next_lines) of the next matmul's weight
    NW into L2; it reads and writes nothing there, so it may do so before the wait.
    """
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    HALF: tl.constexpr = D // 2
    if NW_BLOCK > 0:
        lines = _next_lines((b * HKV + kvh) * NUM_SPLITS + split, nw_per, nw_total, nw_k, nw_klen, nw_lines,
                            1024 // NW.dtype.element_ty.primitive_bitwidth, NW_BLOCK)  # fmt: skip
        _l2_prefetch(NW + lines)
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    pos = tl.load(POS + b).to(tl.int32)
    row = tl.load(ROWS + b).to(tl.int64)
    g = tl.arange(0, BLOCK_G)
    g_mask = g < GROUP
    d = tl.arange(0, HALF)
    dd = tl.arange(0, D)
    cos = tl.load(COS + pos * HALF + d)  # [HALF] fp32
    sin = tl.load(SIN + pos * HALF + d)
    dt = KC.dtype.element_ty

    # q for the GROUP query heads that share this kv head, rotated: [BLOCK_G, HALF] x 2
    q_ptr = QKV + b * stride_qkv + (kvh * GROUP + g)[:, None] * D
    q1 = tl.load(q_ptr + d[None, :], mask=g_mask[:, None], other=0.0).to(tl.float32)
    q2 = tl.load(q_ptr + HALF + d[None, :], mask=g_mask[:, None], other=0.0).to(tl.float32)
    q1r = (q1 * cos[None, :] - q2 * sin[None, :]).to(dt)
    q2r = (q2 * cos[None, :] + q1 * sin[None, :]).to(dt)

    # the new token's k (rotated) and v
    k_ptr = QKV + b * stride_qkv + (H + kvh) * D
    v_ptr = QKV + b * stride_qkv + (H + HKV + kvh) * D
    k1 = tl.load(k_ptr + d).to(tl.float32)
    k2 = tl.load(k_ptr + HALF + d).to(tl.float32)
    k1r = (k1 * cos - k2 * sin).to(dt)
    k2r = (k2 * cos + k1 * sin).to(dt)
    v_new = tl.load(v_ptr + dd)

    cache_base = row * stride_kc_r + kvh * D
    first = split == 0
    if first:  # exactly one program per (sequence, kv head) writes the cache slot
        slot = cache_base + pos.to(tl.int64) * stride_kc_s
        tl.store(KC + slot + d, k1r)
        tl.store(KC + slot + HALF + d, k2r)
        tl.store(VC + slot + dd, v_new)

    s_cur = tl.sum(q1r.to(tl.float32) * k1r.to(tl.float32)[None, :], axis=1)
    s_cur += tl.sum(q2r.to(tl.float32) * k2r.to(tl.float32)[None, :], axis=1)
    s_cur = s_cur * qk_scale  # log2 domain
    m_i = tl.where(first, s_cur, float("-inf"))
    l_i = tl.where(first, 1.0, 0.0) + tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.where(first, 1.0, 0.0) * v_new.to(tl.float32)[None, :] + tl.zeros((BLOCK_G, D), dtype=tl.float32)

    start = split * split_len
    end = tl.minimum(start + split_len, pos)
    s_off = tl.arange(0, BLOCK_S)
    for s0 in range(start, end, BLOCK_S):
        offs = s0 + s_off
        s_mask = offs < end
        kv_ptr = cache_base + offs.to(tl.int64)[:, None] * stride_kc_s
        kc1 = tl.load(KC + kv_ptr + d[None, :], mask=s_mask[:, None], other=0.0)  # [BLOCK_S, HALF]
        kc2 = tl.load(KC + kv_ptr + HALF + d[None, :], mask=s_mask[:, None], other=0.0)
        qk = tl.dot(q1r, tl.trans(kc1)) + tl.dot(q2r, tl.trans(kc2))  # [BLOCK_G, BLOCK_S]
        qk = tl.where(s_mask[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vc = tl.load(VC + kv_ptr + dd[None, :], mask=s_mask[:, None], other=0.0)  # [BLOCK_S, D]
        acc = acc * alpha[:, None] + tl.dot(p.to(dt), vc)
        m_i = m_new

    h = kvh * GROUP + g
    if NUM_SPLITS == 1:
        o = acc / l_i[:, None]
        tl.store(OUT + b * stride_o + h[:, None] * D + dd[None, :], o.to(OUT.dtype.element_ty), mask=g_mask[:, None])
    else:
        # empty splits (start >= pos, not first) leave l_i = 0: store 0 and lse = -inf
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        mid = (b * H + h) * NUM_SPLITS + split
        tl.store(MID_O + mid[:, None] * D + dd[None, :], acc / safe_l[:, None], mask=g_mask[:, None])
        tl.store(MID_LSE + mid, m_i + tl.log2(l_i), mask=g_mask)


@triton.jit
def _combine_kernel(MID_O, MID_LSE, OUT, stride_o, H: tl.constexpr, D: tl.constexpr, NUM_SPLITS: tl.constexpr,
                    USE_PDL: tl.constexpr):  # fmt: skip
    """Merge the per-split partial softmax results of one (sequence, head)."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    sp = tl.arange(0, NUM_SPLITS)
    dd = tl.arange(0, D)
    base = (b * H + h) * NUM_SPLITS
    lse = tl.load(MID_LSE + base + sp)  # [NUM_SPLITS]
    mo = tl.load(MID_O + (base + sp)[:, None] * D + dd[None, :])
    m = tl.max(lse, axis=0)
    w = tl.exp2(lse - m)
    o = tl.sum(mo * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(OUT + b * stride_o + h * D + dd, o.to(OUT.dtype.element_ty))


def attention_splits(
    max_seq_len: int, batch: int, n_kv_heads: int, block_s: int = 64, n_sms: int = 132
) -> tuple[int, int]:
    """(num_splits, positions per split): split the sequence (flash-decoding) when batch x kv heads
    leaves SMs idle, at most 16 splits and at least one block of positions per split.

    Depends only on shapes, so a graph captured once serves any length; splits past a
    sequence's real length exit after writing an empty partial result.
    """
    num_splits = 1
    while (
        num_splits < 16 and batch * n_kv_heads * num_splits * 2 <= n_sms and (num_splits * 2) * block_s <= max_seq_len
    ):
        num_splits *= 2
    split_len = _cdiv(_cdiv(max_seq_len, num_splits), block_s) * block_s
    return num_splits, split_len


def decode_attention(
    qkv: torch.Tensor,
    input_pos: torch.Tensor,
    rows: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    opts: KernelOptions,
    num_splits: int | None = None,
    next_w: torch.Tensor | None = None,
) -> torch.Tensor:
    """qkv [B, (H + 2 Hkv) D]; input_pos [B] (position of the new token); rows [B] (cache row);
    cos/sin [S, D/2] fp32; k_cache/v_cache [R, S, Hkv, D]. Writes the new k/v into the cache
    and returns the attention output [B, H D]. next_w: the output projection's weight, for
    opts.attn_prefetch_mb (with pdl; otherwise unused)."""
    B = qkv.shape[0]
    D = k_cache.shape[-1]
    # the kernel reads POS[b] and ROWS[b]: make them dense (a no-op for the usual contiguous inputs,
    # but pos[:, t] of an expanded [B, T] tensor has stride 0)
    input_pos, rows = input_pos.contiguous(), rows.contiguous()
    S = k_cache.shape[1]
    group = n_heads // n_kv_heads
    block_s, warps, stages = opts.attn_block_s, 4, 2
    B_cfg = opts.config_batch(B)
    tuned = opts.attn_configs.get(B_cfg)
    if tuned is not None and num_splits is None:
        num_splits, block_s, warps, stages = tuned
    num_splits = num_splits or opts.attn_splits
    if num_splits is None:
        num_splits, split_len = attention_splits(S, B_cfg, n_kv_heads, block_s, _num_sms(qkv.device))
    else:
        split_len = _cdiv(_cdiv(S, num_splits), block_s) * block_s
    out = torch.empty((B, n_heads * D), device=qkv.device, dtype=qkv.dtype)
    if num_splits > 1:
        mid_o = torch.empty((B * n_heads * num_splits, D), device=qkv.device, dtype=torch.float32)
        mid_lse = torch.empty((B * n_heads * num_splits,), device=qkv.device, dtype=torch.float32)
    else:
        mid_o = mid_lse = out  # unused
    extra = {"launch_pdl": True} if opts.pdl else {}
    qk_scale = (1.0 / math.sqrt(D)) * 1.4426950408889634  # softmax in base 2
    plan = NO_LINES
    if next_w is not None and opts.pdl and opts.attn_prefetch_mb > 0:
        n_sms = _num_sms(qkv.device)
        plan = weight_lines(B, next_w, B * n_kv_heads * num_splits, opts.attn_prefetch_mb, opts, n_sms)
    _decode_attention_kernel[(B, n_kv_heads, num_splits)](
        qkv, input_pos, rows, cos, sin, k_cache, v_cache, out, mid_o, mid_lse, next_w if plan[-1] else out,
        qkv.stride(0), out.stride(0), k_cache.stride(0), k_cache.stride(1),
        split_len, qk_scale, *plan[:-1],
        H=n_heads, HKV=n_kv_heads, D=D, GROUP=group,
        BLOCK_G=max(16, _next_pow2(group)), BLOCK_S=block_s, NUM_SPLITS=num_splits,
        USE_PDL=opts.pdl, NW_BLOCK=plan[-1], num_warps=warps, num_stages=stages, **extra,
    )  # fmt: skip
    if num_splits > 1:
        _combine_kernel[(B, n_heads)](
            mid_o, mid_lse, out, out.stride(0), H=n_heads, D=D, NUM_SPLITS=num_splits, USE_PDL=opts.pdl,
            num_warps=4, **extra,
        )  # fmt: skip
    return out


# ----------------------------------------------------------------- prefill's elementwise work
# A prefill runs its matmuls and attention through torch (cuBLAS, SDPA); its RoPE and SiLU·up
# ran as torch's unfused elementwise kernels on strided views: a quarter of a batch-64 prefill
# of 256 tokens on the H200 (~105 of ~420 ms in a profile). These do each in one pass, rounding
# where the torch path rounds (the two backends' prefills differ only in last bits: Triton's exp,
# fused multiply-adds).


@triton.jit
def _silu_mul_kernel(X, Y, N, stride_x, stride_y, BLOCK: tl.constexpr):
    """Y[r, :] = bf16(silu(X[r, :N])) * X[r, N:2N], one row block per program."""
    r = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = c < N
    g = tl.load(X + r * stride_x + c, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(X + r * stride_x + N + c, mask=mask, other=0.0).to(tl.float32)
    s = (g / (1.0 + tl.exp(-g))).to(Y.dtype.element_ty).to(tl.float32)  # F.silu rounds to the dtype
    tl.store(Y + r * stride_y + c, (s * u).to(Y.dtype.element_ty), mask=mask)


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x [..., 2N] = [gate | up] (unit last stride); returns [..., N], contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    n = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * n)  # a view for the usual contiguous matmul output
    y = torch.empty((x2.shape[0], n), device=x.device, dtype=x.dtype)
    block = min(1024, _next_pow2(n))
    _silu_mul_kernel[(x2.shape[0], _cdiv(n, block))](x2, y, n, x2.stride(0), y.stride(0), BLOCK=block)
    return y.view(*x.shape[:-1], n)


@triton.jit
def _rope_kernel(X, COS, SIN, Y, T, stride_xb, stride_xt, stride_xh, stride_cb, stride_ct,
                 H: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    """Rotate-half RoPE of every head of token (b, t) in float32, as model.apply_rope computes it."""
    b = tl.program_id(0) // T
    t = tl.program_id(0) % T
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HALF)
    hm = (h < H)[:, None]
    src = X + b.to(tl.int64) * stride_xb + t.to(tl.int64) * stride_xt + h[:, None] * stride_xh + d[None, :]
    x1 = tl.load(src, mask=hm, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=hm, other=0.0).to(tl.float32)
    c = tl.load(COS + b * stride_cb + t * stride_ct + d)[None, :]
    s = tl.load(SIN + b * stride_cb + t * stride_ct + d)[None, :]
    dst = Y + ((b * T + t).to(tl.int64) * H + h[:, None]) * (2 * HALF) + d[None, :]
    tl.store(dst, (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=hm)
    tl.store(dst + HALF, (x2 * c + x1 * s).to(Y.dtype.element_ty), mask=hm)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """model.apply_rope in one kernel: x [B, T, H, D] (unit last stride, e.g. a view of the qkv
    matmul's output); cos/sin [B, T, D/2] float32. Returns a contiguous [B, T, H, D]."""
    B, T, H, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty((B, T, H, D), device=x.device, dtype=x.dtype)
    _rope_kernel[(B * T,)](x, cos, sin, y, T, x.stride(0), x.stride(1), x.stride(2), cos.stride(0), cos.stride(1),
                           H=H, HALF=D // 2, BLOCK_H=_next_pow2(H))  # fmt: skip
    return y
