"""The causal Transformer every agent is built on, with a KV cache for incremental decoding.

Written bottom-up in the manner of nanoGPT: RMSNorm -> rotary positions -> attention -> MLP
-> block -> Transformer. The architecture follows the DICP code's TinyLlama configuration
(pre-norm RMSNorm blocks, rotary positions on every head dimension, biased qkv projection,
SwiGLU MLP without bias, dropout on attention probabilities and residual branches).

The model takes token *embeddings* (each agent embeds its own tokens) and returns hidden
states. `forward(x, cache)` appends `x` after the tokens in `cache` and returns the new cache
alongside: the old cache is never modified, so a planner can branch many continuations off
one context (`KVCache.index_select`, `repeat_interleave`) and prune them again.

Rotary positions make attention depend only on the distance between tokens, so a cache whose
oldest tokens were dropped (`KVCache.keep_last`) still gives exact attention scores *for the
tokens it keeps*; but those tokens were computed while the dropped ones were visible, so a
sliding window is only exact when re-prefilled. The agents re-prefill (see transformer_agent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    """Shape of the Transformer (names follow the DICP configs' `tf_*` keys)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 32
    n_inner: int = 128  # SwiGLU hidden width (`tf_n_inner`)
    dropout: float = 0.1  # residual dropout (`tf_dropout`)
    attn_dropout: float = 0.1  # attention-probability dropout (`tf_attn_dropout`)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0 or (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must split into n_head ({self.n_head}) heads of even size")
        for name in ("n_layer", "n_head", "n_embd", "n_inner"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far, batched over sequences.

    `k[i]`, `v[i]`: [B, n_head, T, head_dim] for layer i. `next_pos` is the absolute
    position the next token will get (rotary angles depend on it; only differences matter).
    Every method returns a new cache; tensors are shared where nothing changes.
    """

    k: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)
    next_pos: int = 0

    def __len__(self) -> int:
        return 0 if not self.k else self.k[0].shape[2]

    @property
    def batch_size(self) -> int:
        return 0 if not self.k else self.k[0].shape[0]

    def clone(self) -> KVCache:
        return KVCache([t.clone() for t in self.k], [t.clone() for t in self.v], self.next_pos)

    def index_select(self, batch_idx: torch.Tensor) -> KVCache:
        """Rows `batch_idx` [B'] of the batch (reorder, prune or duplicate beams)."""
        return KVCache([t.index_select(0, batch_idx) for t in self.k], [t.index_select(0, batch_idx) for t in self.v], self.next_pos)

    @staticmethod
    def cat(caches: list[KVCache]) -> KVCache:
        """The sequences of several caches of one length and position, stacked into one batch."""
        if len({(len(c), c.next_pos) for c in caches}) != 1:
            raise ValueError(f"caches to stack must have one length and position, got {[(len(c), c.next_pos) for c in caches]}")
        layers = range(len(caches[0].k))
        return KVCache([torch.cat([c.k[i] for c in caches]) for i in layers], [torch.cat([c.v[i] for c in caches]) for i in layers],
                       caches[0].next_pos)

    def repeat_interleave(self, repeats: int) -> KVCache:
        """Each sequence `repeats` times in a row: [B, ...] -> [B * repeats, ...] (branching)."""
        return KVCache(
            [t.repeat_interleave(repeats, dim=0) for t in self.k], [t.repeat_interleave(repeats, dim=0) for t in self.v], self.next_pos
        )

    def truncate(self, length: int) -> KVCache:
        """The first `length` tokens only (undo tokens appended speculatively)."""
        drop = len(self) - length
        if drop < 0:
            raise ValueError(f"cannot truncate a cache of {len(self)} tokens to {length}")
        return KVCache([t[:, :, :length] for t in self.k], [t[:, :, :length] for t in self.v], self.next_pos - drop)

    def keep_last(self, length: int) -> KVCache:
        """The last `length` tokens only (positions keep their absolute values)."""
        return KVCache([t[:, :, -length:] for t in self.k], [t[:, :, -length:] for t in self.v], self.next_pos)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * norm).type_as(x) * self.weight


def rotary_angles(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [T, head_dim] for integer `positions` [T], laid out for `apply_rotary`:
    (cos, cos) and (-sin, sin) over the (first half, second half) of a head.

    Angles are computed in float64 so that late positions of a long evaluation (tens of
    thousands of steps) keep full float32 precision after the cast.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, head_dim/2]
    cos, sin = angles.cos().float(), angles.sin().float()
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [..., D] by the angles of `rotary_angles` (broadcast to x):
    (x1 cos - x2 sin, x2 cos + x1 sin), as x * cos + (x2, x1) * sin in three full-width kernels
    (the same floats: negating is exact and a sum does not depend on its order)."""
    dtype, x = x.dtype, x.float()
    x1, x2 = x.chunk(2, dim=-1)  # [B, H, T, D/2] each
    return (x * cos + torch.cat([x2, x1], dim=-1) * sin).to(dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.attn_dropout = config.attn_dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=True)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=True)

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], past_k: torch.Tensor | None, past_v: torch.Tensor | None,
        siblings: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, C] after `past` ([B, H, T_past, D] or None) -> y [B, T, C] and the keys and values of
        past and new tokens [B, H, T_past + T, D] (the extended cache: concatenated once, here).

        `rotary`: the new tokens' `rotary_angles`. `siblings`: each new token attends to the past
        and to itself only (`_sibling_attention`); the keys and values returned are then the past's."""
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        qkv = self.qkv(x)  # [B, T, 3C]
        cos, sin = rotary  # [T, D]
        # q and k rotated in one pass ([B, T, 2H, D]; ~15% of a 4-layer forward of a batch of prefixes)
        qk = apply_rotary(qkv[..., : 2 * C].view(B, T, 2 * H, D), cos[:, None], sin[:, None]).transpose(1, 2)  # [B, 2H, T, D]
        q, k = qk[:, :H], qk[:, H:]  # [B, H, T, D] each
        v = qkv[..., 2 * C :].view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        dropout = self.attn_dropout if self.training else 0.0
        if siblings:
            y = _sibling_attention(q, past_k.to(k.dtype), past_v.to(v.dtype), k, v, dropout)
            keys, values = past_k, past_v
        else:
            keys = k if past_k is None else torch.cat([past_k.to(k.dtype), k], dim=2)  # [B, H, T_past + T, D]
            values = v if past_v is None else torch.cat([past_v.to(v.dtype), v], dim=2)
            t_past = keys.shape[2] - T
            if t_past == 0:
                y = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout, is_causal=True)
            elif T == 1:
                y = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout)  # one new token sees everything
            else:
                # New token i (absolute index t_past + i) sees cached tokens and new tokens <= i.
                mask = torch.ones(T, t_past + T, dtype=torch.bool, device=x.device).tril(diagonal=t_past)  # [T, T_past + T]
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, C)  # [B, H, T, D] -> [B, T, C]
        return self.proj(y), keys, values


def _sibling_attention(q: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       dropout: float) -> torch.Tensor:
    """Attention of T alternative next tokens [B, H, T, D], each over the past [B, H, P, D] and its own key.

    One softmax over (past scores, own score), without concatenating the past with the new keys:
    a planner branches A actions off every beam's cache, and that copy cost more than the attention
    (benchmarks/bench_sibling_attention.py). The same numbers as a masked attention over the
    concatenation up to float rounding.
    """
    scale = q.shape[-1] ** -0.5
    scores = torch.cat([q @ past_k.transpose(-1, -2), (q * k).sum(-1, keepdim=True)], dim=-1).mul_(scale)  # [B, H, T, P + 1]
    probs = F.dropout(scores.softmax(-1), dropout, training=dropout > 0)
    P = past_k.shape[2]
    return probs[..., :P] @ past_v + probs[..., P:] * v


class SwiGLU(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(config.n_embd, config.n_inner, bias=False)
        self.w2 = nn.Linear(config.n_embd, config.n_inner, bias=False)
        self.w3 = nn.Linear(config.n_inner, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm_1 = RMSNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = RMSNorm(config.n_embd)
        self.mlp = SwiGLU(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary, past_k, past_v, siblings=False):
        h, k, v = self.attn(self.norm_1(x), rotary, past_k, past_v, siblings)
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.norm_2(x)))
        return x, k, v


class Transformer(nn.Module):
    """Causal Transformer over token embeddings [B, T, n_embd] -> hidden states [B, T, n_embd]."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.n_embd)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, siblings: bool = False) -> tuple[torch.Tensor, KVCache]:
        """Hidden states of tokens `x` [B, T, C] placed after `cache`, and the extended cache.

        With `cache=None` this is the ordinary full forward (positions 0..T-1). With `siblings`, the
        T tokens are alternatives for the one next position (a planner's action queries): each
        attends to the cache and to itself only, and the cache comes back unchanged. The same
        numbers, up to float rounding, as `x.reshape(B * T, 1, C)` after T copies of the cache, without copying it.
        """
        cache = cache if cache is not None else KVCache()
        if len(cache) and cache.batch_size != x.shape[0]:
            raise ValueError(f"cache holds {cache.batch_size} sequences but x has {x.shape[0]}")
        T, past = x.shape[1], len(cache)
        if siblings:
            if not past:
                raise ValueError("sibling tokens branch off a cache; got an empty one")
            positions = torch.full((T,), cache.next_pos, device=x.device)  # [T]: every sibling is the next token
        else:
            positions = torch.arange(cache.next_pos, cache.next_pos + T, device=x.device)  # [T]
        rotary = rotary_angles(positions, self.config.n_embd // self.config.n_head, self.config.rope_base)  # once for every layer
        x = self.drop(x)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            past_k = cache.k[i] if cache.k else None
            past_v = cache.v[i] if cache.v else None
            x, k, v = block(x, rotary, past_k, past_v, siblings)
            keys.append(k)
            values.append(v)
        return self.norm_f(x), (cache if siblings else KVCache(keys, values, cache.next_pos + T))
