"""Attention for the Transformer (models/transformer.py): scaled dot-product attention (eq. 1), the
multi-head layer (§3.2.2; self-attention with one fused QKV matrix, or cross-attention over the encoder),
and DecodeState, the KV cache that incremental decoding carries from one step to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from seqtool.models.transformer import TransformerConfig


def attend(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, causal: bool, dropout: float,
           weights: list[Tensor] | None = None) -> Tensor:
    """softmax(QKᵀ/√d_k)V (eq. 1). query (B, H, T, Dh), key/value (B, H, S, Dh), mask a bool tensor
    broadcastable to (B, H, T, S), True where attending is allowed. → (B, H, T, Dh).

    The fused kernel is the default; when the caller hands a `weights` list the same product is
    computed explicitly and its attention probabilities (B, H, T, S) are appended to that list.
    """
    if weights is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout,
                                              is_causal=causal)
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))  # (B, H, T, S)
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    weights.append(probs.detach())
    return F.dropout(probs, dropout) @ value


@dataclass
class DecodeState:
    """What `step` carries between calls: the self-attention KV cache (per layer, in buffers that grow
    by doubling) and, for translation, the encoder's cross-attention keys/values and source mask.
    `attention`: set it to a dict to collect attention weights: each step call appends one (B, H, t, S)
    tensor per layer to "decoder" and "cross", and the first also records "encoder" (B, H, S, S).
    `step` writes into the buffers and returns the same state: step a state once, then use the result."""

    keys: list[Tensor | None]  # per layer (B, H, capacity, Dh)
    values: list[Tensor | None]
    length: int = 0  # positions filled
    tokens: Tensor | None = None  # (B, capacity), [:, :length] the ids in the cache (re-read when sliding)
    memory: list[tuple[Tensor, Tensor]] | None = None  # per layer (key, value), each (B, H, S, Dh)
    src_mask: Tensor | None = None  # (B, 1, 1, S) True for real source tokens
    src: Tensor | None = None  # (B, S) source ids, to record the encoder's attention on request
    attention: dict[str, list[Tensor]] | None = field(default=None)

    def append(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's (B, H, t, Dh) keys/values after the cached ones; → all of them."""
        t = key.size(2)
        end = self.length + t
        buf = self.keys[layer]
        if buf is None or buf.size(2) < end:  # grow by doubling: O(1) amortised per token
            capacity = max(end, 2 * (buf.size(2) if buf is not None else 0), 64)
            self.keys[layer], self.values[layer] = (_grown(b, key, capacity, self.length)
                                                    for b in (buf, self.values[layer]))
        keys, values = self.keys[layer], self.values[layer]
        keys.narrow(2, self.length, t).copy_(key)  # written in place: no copy of the prefix
        values.narrow(2, self.length, t).copy_(value)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def append_tokens(self, ids: Tensor) -> None:
        """Record this step's ids (B, t) after the cached ones, in a buffer that grows like the cache
        (a decoder LM re-reads them when it slides past max_len)."""
        t, end = ids.size(1), self.length + ids.size(1)
        if (old := self.tokens) is None or old.size(1) < end:
            capacity = max(end, 2 * (old.size(1) if old is not None else 0), 64)
            self.tokens = ids.new_empty(ids.size(0), capacity)
            if old is not None:
                self.tokens[:, :self.length] = old[:, :self.length]
        self.tokens.narrow(1, self.length, t).copy_(ids)


def _grown(buf: Tensor | None, like: Tensor, capacity: int, length: int) -> Tensor:
    new = like.new_empty(like.size(0), like.size(1), capacity, like.size(3))  # (B, H, capacity, Dh)
    if buf is not None:
        new[:, :, :length] = buf[:, :, :length]
    return new


class MultiHeadAttention(nn.Module):
    """§3.2.2: n_heads attentions over learned projections. Self-attention projects query, key and value
    with one fused matrix (GPT-2's c_attn); cross-attention takes key and value from the encoder."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.n_heads, self.cross = cfg.n_heads, cross
        self.dropout = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        d = cfg.d_model
        if cross:
            self.query = nn.Linear(d, d, bias=cfg.bias)
            self.key_value = nn.Linear(d, 2 * d, bias=cfg.bias)
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.out = nn.Linear(d, d, bias=cfg.bias)

    def split_heads(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        """(B, T, n·D) → n tensors (B, H, T, Dh): views, no copy (one view and one permute, not n of each)."""
        B, T, _ = x.shape
        return x.view(B, T, n, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the encoder output (B, S, D), each (B, H, S, Dh)."""
        key, value = self.split_heads(self.key_value(memory), 2)
        return key, value

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False,
                state: DecodeState | None = None, layer: int = 0,
                memory: tuple[Tensor, Tensor] | None = None, weights: list[Tensor] | None = None) -> Tensor:
        """x (B, T, D) → (B, T, D). Self-attention over x (after the cached prefix when `state` is
        given), or cross-attention over `memory` = (key, value) from `memory_kv`."""
        B, T, D = x.shape
        if self.cross:
            (query,) = self.split_heads(self.query(x), 1)
            key, value = memory
        else:
            query, key, value = self.split_heads(self.qkv(x), 3)  # each (B, H, T, Dh)
            if state is not None:
                key, value = state.append(layer, key, value)  # (B, H, length + T, Dh)
        dropout = self.dropout if self.training else 0.0
        y = attend(query, key, value, mask, causal, dropout, weights)  # (B, H, T, Dh)
        return self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
