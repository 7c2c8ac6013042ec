"""CUDAGraphPool: one decode graph per capture size, dispatched by batch size (after vLLM's
CudagraphDispatcher).

The pool owns the one list of capture sizes. A batch of n sequences runs the graph of the
smallest captured size >= n, with rows n.. padded: padded rows decode token 0 at position 0
into the model's scratch cache row, so they never touch a real sequence's KV cache, and only
the n real rows of the output come back. Above the largest size the step runs eagerly.

Graphs are captured largest first into one shared memory pool, so each smaller graph reuses
the blocks the larger ones freed. All graphs write logits into one buffer owned by the pool
(rows [:size]), so static outputs do not grow with the number of graphs. The output of
step() is a view of that buffer: valid until the next step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .model import Transformer
from .padding import padded_size, validate_capture_sizes


@dataclass
class CapturedGraph:
    size: int
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # [size] static inputs, copied into before each replay
    input_pos: torch.Tensor  # [size]
    rows: torch.Tensor  # [size] cache row per batch entry; padded entries -> scratch row
    logits: torch.Tensor  # [size, V] view of the pool's shared output buffer
    warmup_s: float
    capture_s: float
    device_bytes: int  # device memory this capture took (driver view: pool segments + graph objects)
    pool_bytes: int  # of which caching-allocator segments
    real_rows: int = 0  # entries [real_rows:size] may hold a previous step's real rows

    def summary(self) -> dict:
        return {
            "size": self.size,
            "warmup_s": self.warmup_s,
            "capture_s": self.capture_s,
            "memory_mb": self.device_bytes / 2**20,
            "pool_mb": self.pool_bytes / 2**20,
        }


class CUDAGraphPool:
    """Decode graphs for a fixed list of batch sizes over one Transformer (setup_caches done)."""

    def __init__(self, model: Transformer, capture_sizes):
        if model.max_batch < 1:
            raise ValueError("call model.setup_caches() before building a CUDAGraphPool")
        self.model = model
        self.sizes = validate_capture_sizes(capture_sizes)
        if model.kernel_opts is not None:  # eager steps of n take the configs of the graph n pads to
            model.kernel_opts.size_classes = tuple(self.sizes)
        self.graphs: dict[int, CapturedGraph] = {}
        self.mempool = None
        self.logits_buf: torch.Tensor | None = None
        self.static_io_bytes = 0

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def padded_size(self, n: int) -> int | None:
        """The captured size a batch of n runs at, or None (eager) above the largest (padding.py)."""
        return padded_size(n, self.sizes)

    def dispatch(self, n: int) -> CapturedGraph | None:
        """The graph that serves a batch of n, or None: run eagerly."""
        size = self.padded_size(n)
        return None if size is None else self.graphs[size]

    def capture(self, warmup_iters: int = 1) -> list[dict]:
        """Capture every size, largest first, into one memory pool. Returns per-size summaries."""
        if not torch.cuda.is_available() or self.model.output.weight.device.type != "cuda":
            raise RuntimeError("CUDA graphs need the model on a CUDA device")
        if self.graphs:
            raise RuntimeError("this pool has captured already")
        dev = self.model.output.weight.device
        self.mempool = torch.cuda.graph_pool_handle()
        self.logits_buf = torch.empty((self.max_size, self.model.args.vocab_size), device=dev, dtype=torch.float32)
        self.static_io_bytes = self.logits_buf.numel() * 4
        for size in reversed(self.sizes):
            self.graphs[size] = self._capture_one(size, warmup_iters)
        return [self.graphs[s].summary() for s in self.sizes]

    def _capture_one(self, size: int, warmup_iters: int) -> CapturedGraph:
        dev = self.model.output.weight.device
        # Static inputs are ordinary tensors (not inference tensors), so step() may copy into
        # them with or without inference mode.
        tokens = torch.zeros(size, dtype=torch.long, device=dev)
        input_pos = torch.zeros(size, dtype=torch.long, device=dev)
        rows = torch.full((size,), self.model.scratch_row, dtype=torch.long, device=dev)
        out = self.logits_buf[:size]
        self.static_io_bytes += 3 * size * 8
        t0 = time.perf_counter()
        # Warm up on a side stream (JIT-compiles the Triton kernels, which must not happen mid-capture).
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup_iters):
                self.model.decode(tokens, input_pos, rows, out=out)
        torch.cuda.current_stream(dev).wait_stream(side)
        torch.cuda.synchronize(dev)
        warmup_s = time.perf_counter() - t0
        # torch.cuda.graph() empties the allocator cache on entry: take the baseline after
        # doing the same, or cached blocks released there make the delta negative.
        torch.cuda.empty_cache()
        free0, reserved0 = torch.cuda.mem_get_info(dev)[0], torch.cuda.memory_reserved(dev)
        t0 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.mempool), torch.inference_mode():
            self.model.decode(tokens, input_pos, rows, out=out)
        torch.cuda.synchronize(dev)
        capture_s = time.perf_counter() - t0
        free1, reserved1 = torch.cuda.mem_get_info(dev)[0], torch.cuda.memory_reserved(dev)
        return CapturedGraph(size, graph, tokens, input_pos, rows, out, warmup_s, capture_s,
                             free0 - free1, reserved1 - reserved0)  # fmt: skip

    def step(self, tokens: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Decode one token for n sequences (tokens, input_pos, rows [n]); returns logits [n, V].

        Runs the graph of the padded size, or eagerly above the largest size."""
        n = tokens.shape[0]
        g = self.dispatch(n)
        if g is None:
            return self.model.decode(tokens, input_pos, rows)
        # one launch for the three inputs, not three (an ATen launch costs 8-11 us of host time on the lent H200 host)
        torch._foreach_copy_([g.tokens[:n], g.input_pos[:n], g.rows[:n]], [tokens, input_pos, rows])
        if g.real_rows > n:  # a larger batch ran last: point its leftover rows back at scratch
            g.tokens[n:].zero_()
            g.input_pos[n:].zero_()
            g.rows[n:].fill_(self.model.scratch_row)
        g.real_rows = n
        g.graph.replay()
        return g.logits[:n]

    def compare_with_eager(self, tokens: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor) -> dict:
        """Run one step eagerly and through the pool on the same inputs; report the difference.

        Both write the same k/v into the same cache slots, so the check leaves the cache as one
        step would."""
        with torch.inference_mode():
            eager = self.model.decode(tokens, input_pos, rows).clone()
            graph = self.step(tokens, input_pos, rows).clone()
        return compare(eager, graph) | {"n": int(tokens.shape[0]), "padded_size": self.padded_size(tokens.shape[0])}

    def memory_bytes(self) -> int:
        return sum(g.device_bytes for g in self.graphs.values())

    def summary(self) -> dict:
        return {
            "capture_sizes": self.sizes,
            "per_size": [self.graphs[s].summary() for s in self.sizes if s in self.graphs],
            "memory_mb_total": self.memory_bytes() / 2**20,
            "static_io_mb": self.static_io_bytes / 2**20,
            "capture_s_total": sum(g.capture_s + g.warmup_s for g in self.graphs.values()),
        }


def compare(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """bit_equal, max_abs_diff and rel_err = ||out - ref|| / ||ref|| (float64), nan-aware."""
    r, o = ref.double(), out.double()
    finite = bool(torch.isfinite(o).all()) and bool(torch.isfinite(r).all())
    diff = (o - r).norm().item()
    return {
        "bit_equal": bool(torch.equal(ref, out)),
        "max_abs_diff": (o - r).abs().max().item(),
        "rel_err": diff / max(r.norm().item(), 1e-30),
        "finite": finite,
    }
