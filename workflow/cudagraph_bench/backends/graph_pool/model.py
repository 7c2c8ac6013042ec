"""A Llama-style decoder for decode benchmarks, read top-down (after gpt-fast's model.py).

ModelArgs (the shape, from a preset of config/config.yaml `models`: the one place presets live), then Transformer -> TransformerBlock -> Attention / FeedForward /
RMSNorm, then the KV cache, RoPE helpers, weight init and checkpoint loading.

RMSNorm weights are folded into the matmul after them at build time (fold_norm_weights).
Two backends run the same weights:
- "torch": plain PyTorch ops (F.linear, SDPA over the cache window with a mask, as
  gpt-fast does; a prefill from position 0 attends causally over the prompt alone). Used for
  prefill, on CPU, and as the numerical reference (the torch.compile peer is its own plain
  model: backends/torch_compile.py).
- "triton": the decode step (one new token per sequence) as five fused Triton kernels
  per block (kernels.py); attention reads only positions 0..pos of each sequence.
  Eager mode and graph mode run exactly these kernels; a graph only removes the launches.
  A prefill stays on the torch path except its RoPE and SiLU·up (kernels.rope, kernels.silu_mul:
  one pass each instead of several unfused elementwise kernels).

The KV cache has one row per sequence plus a scratch row: the graph pool points padded
batch rows at the scratch row, so padding never writes into a real sequence's cache.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# preset keys that belong to other backends and are ignored here
_FOREIGN_KEYS = {"name", "vllm_model_dir"}


@dataclass
class ModelArgs:
    """A model's shape. Every value comes from a preset of the config (`models`, validated by the
    config schema, which requires rope_theta and norm_eps too): none is restated here."""

    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_seq_len: int
    dtype: str
    rope_theta: float
    norm_eps: float
    checkpoint: str | None = None
    # llama3-style: factor, low/high_freq_factor, original_max_position_embeddings; None: plain RoPE
    rope_scaling: dict | None = None

    def __post_init__(self):
        for name in ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "head_dim", "intermediate_size", "vocab_size", "max_seq_len"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"model {name} must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_preset(cls, preset: dict) -> ModelArgs:
        """Build from a config preset dict; unknown keys raise ValueError (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(preset) - known - _FOREIGN_KEYS
        if unknown:
            raise ValueError(f"unknown model preset keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**{k: v for k, v in preset.items() if k in known})

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def qkv_dim(self) -> int:
        return (self.n_heads + 2 * self.n_kv_heads) * self.head_dim

    def as_dict(self) -> dict:
        return asdict(self)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        dt = args.torch_dtype
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.hidden_size, dtype=dt)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.hidden_size, args.norm_eps, dt)
        self.output = nn.Linear(args.hidden_size, args.vocab_size, bias=False, dtype=dt)
        self.backend = "torch"  # "torch" | "triton"; see module docstring
        self.kernel_opts = None  # kernels.KernelOptions when backend == "triton"
        self.max_batch = 0
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)  # [S, D/2] fp32
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)

    def set_backend(self, backend: str, kernel_opts=None) -> None:
        """Choose how decode() runs: "torch" or "triton" (kernel_opts: kernels.KernelOptions)."""
        if backend not in ("torch", "triton"):
            raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
        if backend == "triton":
            reason = triton_unsupported_reason(self.args, self.output.weight.device)
            if reason:
                raise ValueError(f"the triton backend cannot run this model: {reason}")
            from .kernels import KernelOptions

            kernel_opts = kernel_opts or KernelOptions()
        self.backend, self.kernel_opts = backend, kernel_opts

    @property
    def scratch_row(self) -> int:
        """Cache row that padded batch entries write to; never read by a real sequence."""
        return self.max_batch

    def setup_caches(self, max_batch: int, max_seq: int | None = None) -> None:
        """Allocate the KV caches (max_batch rows + 1 scratch row) and RoPE tables, once."""
        max_seq = max_seq or self.args.max_seq_len
        if max_batch <= 0 or max_seq <= 0:
            raise ValueError(f"setup_caches needs positive sizes, got max_batch={max_batch}, max_seq={max_seq}")
        dev, dt, a = self.output.weight.device, self.output.weight.dtype, self.args
        self.max_batch = max_batch
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(max_batch + 1, max_seq, a.n_kv_heads, a.head_dim, dt, dev)
        cos, sin = rope_tables(max_seq, a.head_dim, a.rope_theta, a.rope_scaling)
        self.rope_cos, self.rope_sin = cos.to(dev), sin.to(dev)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor | None = None,
                last_only: bool = False, prefill: bool = False) -> torch.Tensor:  # fmt: skip
        """torch backend, any number of tokens. tokens/input_pos [B, T] int64, rows [B] cache row of each
        sequence (None: rows 0..B-1). Returns float32 logits [B, T, V] ([B, V] if last_only).

        prefill: the tokens are positions 0..T-1 of new sequences (the caller vouches for it), so
        attention runs causally over these T tokens alone (SDPA's fused kernels) and the cache is
        only written; otherwise each token attends over its cache row's whole window, masked.
        With the triton backend a prefill's RoPE and SiLU·up run as Triton kernels."""
        h = self.tok_embeddings(tokens)  # [B, T, D]
        cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]  # [B, T, D/2]
        fused = prefill and self.backend == "triton"
        for layer in self.layers:
            h = layer(h, input_pos, rows, cos, sin, prefill, fused)
        if last_only:
            h = h[:, -1]
        return self.output(self.norm(h)).float()

    def decode_torch(self, tokens: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """decode() through the torch path whatever the backend (the Triton kernels' reference)."""
        return self.forward(tokens[:, None], input_pos[:, None], rows)[:, 0]

    def decode(self, tokens: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """One new token per sequence: tokens, input_pos, rows [B] int64 on the model's device.

        Capturable: no host syncs, no data-dependent shapes. Returns float32 logits [B, V],
        written into `out` when given (the graph pool passes one buffer shared by all graphs)."""
        if self.backend != "triton":
            logits = self.decode_torch(tokens, input_pos, rows)
            return logits if out is None else out.copy_(logits)
        from . import kernels as K

        o = self.kernel_opts
        h = self.tok_embeddings(tokens)  # [B, D], updated in place by the residual epilogues
        for layer in self.layers:
            at, ff = layer.attention, layer.feed_forward
            qkv = K.linear(h, at.wqkv.weight, o, rms_norm=True, eps=self.args.norm_eps)
            cache = at.kv_cache
            a = K.decode_attention(qkv, input_pos, rows, self.rope_cos, self.rope_sin, cache.k_cache,
                                   cache.v_cache, at.n_heads, at.n_kv_heads, o, next_w=at.wo.weight)  # fmt: skip
            K.linear(a, at.wo.weight, o, residual=h, out=h)
            x = K.linear(h, ff.w13.weight, o, rms_norm=True, eps=self.args.norm_eps, silu_mul=True)
            K.linear(x, ff.w2.weight, o, residual=h, out=h)
        return K.linear(h, self.output.weight, o, rms_norm=True, eps=self.args.norm_eps,
                        out=out, out_dtype=torch.float32)  # fmt: skip


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.hidden_size, args.norm_eps, args.torch_dtype)
        self.ffn_norm = RMSNorm(args.hidden_size, args.norm_eps, args.torch_dtype)

    def forward(self, h, input_pos, rows, cos, sin, prefill=False, fused=False):
        h = h + self.attention(self.attention_norm(h), input_pos, rows, cos, sin, prefill, fused)
        return h + self.feed_forward(self.ffn_norm(h), fused)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wqkv = nn.Linear(args.hidden_size, args.qkv_dim, bias=False, dtype=args.torch_dtype)  # fused q, k, v
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.hidden_size, bias=False, dtype=args.torch_dtype)
        self.kv_cache: KVCache | None = None

    def forward(self, x, input_pos, rows, cos, sin, prefill=False, fused=False):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        if fused:
            from .kernels import rope
        else:
            rope = apply_rope
        q = rope(q.view(B, T, H, D), cos, sin)  # [B, T, H, D]
        k = rope(k.view(B, T, Hkv, D), cos, sin)  # [B, T, Hkv, D]
        v = v.view(B, T, Hkv, D)
        k_all, v_all = self.kv_cache.update(input_pos, k, v, rows)  # [B, S, Hkv, D]
        if prefill:  # positions 0..T-1: nothing older in the cache to attend to
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=True)  # fmt: skip
            return self.wo(y.transpose(1, 2).reshape(B, T, H * D))
        S = k_all.shape[1]
        # gpt-fast style: attend over the whole window, masking positions after each token's own
        mask = torch.arange(S, device=x.device)[None, None, None, :] <= input_pos[:, None, :, None]  # [B, 1, T, S]
        k_all = k_all.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)  # [B, H, S, D]
        v_all = v_all.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k_all, v_all, attn_mask=mask)  # [B, H, T, D]
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.intermediate = args.intermediate_size
        self.w13 = nn.Linear(
            args.hidden_size, 2 * args.intermediate_size, bias=False, dtype=args.torch_dtype
        )  # gate; up
        self.w2 = nn.Linear(args.intermediate_size, args.hidden_size, bias=False, dtype=args.torch_dtype)

    def forward(self, x, fused=False):
        if fused:
            from .kernels import silu_mul

            return self.w2(silu_mul(self.w13(x)))
        gate, up = self.w13(x).split(self.intermediate, dim=-1)
        return self.w2(F.silu(gate) * up)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused kernel on CUDA


class KVCache(nn.Module):
    """Static K/V storage: [R, S, Hkv, D] per tensor, R = sequences + 1 scratch row."""

    def __init__(self, rows: int, max_seq: int, n_kv_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (rows, max_seq, n_kv_heads, head_dim)  # [R, S, Hkv, D]
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None = None):
        """Write k, v [B, T, Hkv, D] at positions input_pos [B, T] of cache rows `rows` [B] (None: 0..B-1),
        in place with index_copy_ on the flattened (row, position) slot. Returns the [B, S, Hkv, D] views
        (rows None) or gathered copies (rows given) of the caches."""
        B, T = k.shape[:2]
        R, S = self.k_cache.shape[:2]
        if input_pos.dim() == 1:
            input_pos = input_pos[None, :].expand(B, T)
        row_idx = torch.arange(B, device=k.device) if rows is None else rows
        slots = (row_idx[:, None] * S + input_pos).reshape(-1)  # [B*T]
        self.k_cache.view(R * S, *self.k_cache.shape[2:]).index_copy_(0, slots, k.reshape(B * T, *k.shape[2:]))
        self.v_cache.view(R * S, *self.v_cache.shape[2:]).index_copy_(0, slots, v.reshape(B * T, *v.shape[2:]))
        if rows is None:
            return self.k_cache[:B], self.v_cache[:B]
        return self.k_cache[rows], self.v_cache[rows]


def triton_unsupported_reason(args: ModelArgs, device: torch.device) -> str | None:
    """Why the Triton decode kernels cannot run this model here, or None if they can."""
    d = args.head_dim
    if d < 32 or d & (d - 1):
        return f"head_dim must be a power of two >= 32, got {d}"
    if args.hidden_size % 16 or args.intermediate_size % 16 or (args.n_heads * d) % 16:
        return "hidden, intermediate and attention widths must be multiples of 16"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if torch.device(device).type != "cuda" and not interpret:
        return "Triton kernels need a CUDA device"
    if args.torch_dtype == torch.float32 and not interpret:
        return "float32 weights would run the kernels in tf32; use the torch backend"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def rope_tables(max_seq: int, head_dim: int, theta: float, scaling: dict | None = None):
    """cos, sin [max_seq, head_dim/2] float32 for rotate-half RoPE (the HF Llama layout)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling:
        freqs = _llama3_scale(freqs, scaling)
    angles = torch.outer(torch.arange(max_seq, dtype=torch.float64), freqs)  # [S, D/2]
    return angles.cos().float(), angles.sin().float()


def _llama3_scale(freqs: torch.Tensor, s: dict) -> torch.Tensor:
    # the config's models.<name>.rope_scaling (its schema requires every key)
    factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freqs
    smooth = (old_len / wavelen - lo) / (hi - lo)
    scaled = torch.where(wavelen > old_len / lo, freqs / factor, freqs)
    mid = (1 - smooth) * freqs / factor + smooth * freqs
    is_mid = (wavelen <= old_len / lo) & (wavelen >= old_len / hi)
    return torch.where(is_mid, mid, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos/sin [B, T, D/2]. Rotate-half RoPE computed in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def build_model(args: ModelArgs, device: str | torch.device, seed: int = 0) -> Transformer:
    """The model on `device`, weights random (seeded, std 1/sqrt(fan_in)) or from args.checkpoint."""
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device=device)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    else:
        init_random_weights(model, seed)
    fold_norm_weights(model)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def fold_norm_weights(model: Transformer) -> None:
    """Fold each RMSNorm's weight into the matmul that follows it (W <- W diag(g), g <- 1).

    rmsnorm(x, g) @ W^T == rmsnorm(x, 1) @ (W diag(g))^T, so both backends compute the same
    function, and the Triton matmuls only need 1/rms(x) per row, applied in their epilogue.
    A no-op for random weights (g = 1); for a checkpoint it rounds W diag(g) once to bf16."""
    pairs = [(layer.attention_norm, layer.attention.wqkv) for layer in model.layers]
    pairs += [(layer.ffn_norm, layer.feed_forward.w13) for layer in model.layers]
    pairs.append((model.norm, model.output))
    for norm, lin in pairs:
        lin.weight.mul_(norm.weight[None, :])
        norm.weight.fill_(1.0)


@torch.no_grad()
def init_random_weights(model: Transformer, seed: int) -> None:
    dev = model.output.weight.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif p.dim() == 2 and "tok_embeddings" not in name:
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=gen)
        else:
            p.normal_(0.0, 1.0, generator=gen)


# HF Llama names -> ours; q/k/v and gate/up are concatenated into the fused weights.
_HF_SIMPLE = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER = {
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
}


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors from a local file or directory (*.safetensors, else *.pt/*.bin). Never touches a hub."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
        files = files or sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".pt", ".bin")))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ValueError(f"checkpoint {path!r} is neither a file nor a directory")
    if not files:
        raise ValueError(f"checkpoint directory {path!r} holds no .safetensors/.pt/.bin file")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        if f.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd.update(load_file(f))
        else:
            sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def hf_to_fused(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Map an HF-layout Llama state dict onto this model's names (a no-op for our own names)."""
    if "model.embed_tokens.weight" not in sd:
        return sd
    out = {ours: sd[hf] for hf, ours in _HF_SIMPLE.items() if hf in sd}
    out.setdefault("output.weight", sd["model.embed_tokens.weight"])  # tied embeddings
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for hf, ours in _HF_LAYER.items():
            out[f"layers.{i}.{ours}"] = sd[p + hf]
        a = p + "self_attn."
        out[f"layers.{i}.attention.wqkv.weight"] = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])  # fmt: skip
        m = p + "mlp."
        out[f"layers.{i}.feed_forward.w13.weight"] = torch.cat([sd[m + "gate_proj.weight"], sd[m + "up_proj.weight"]])
    return out


@torch.no_grad()
def load_checkpoint(model: Transformer, path: str) -> None:
    sd = hf_to_fused(read_state_dict(path), model.args.n_layers)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(sd))
    if missing:
        raise ValueError(f"checkpoint {path!r} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    for name, p in own.items():
        if tuple(sd[name].shape) != tuple(p.shape):
            raise ValueError(
                f"checkpoint tensor {name} has shape {tuple(sd[name].shape)}, model wants {tuple(p.shape)}"
            )
        p.copy_(sd[name])
