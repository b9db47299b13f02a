"""One Wan transformer block run Astra's way, over two token streams.

The chunk stream (noisy latents being generated) and the history stream (packed clean history) share
one self-attention; everything else in the block is token-wise, so running the streams separately is
exact and lets each stream carry its own timestep modulation.

Per block (the release's order, on diffusers' Wan modules):

    x_in = modulate(norm1(x)) + action_embedding
    a    = self_attn(x_in)                      # over [history | chunk]
    x    = x + gate_msa * act_adapter(a)        # ACT-Adapter, identity at start
    x    = x + cross_attn(norm2(x), text)
    x    = x + c_gate * ffn(modulate(norm3(x)))

Attention modes:
- `full`: history queries see history and chunk (Astra).
- `block_causal`: history queries see only history, so history keys/values depend on neither the chunk
  nor the denoising step and can be cached (`LayerKV`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.transformers.transformer_wan import WanAttention, WanTransformerBlock
from torch import nn
from torch.nn import functional as F

from .rope import apply_rotary


@dataclass
class Stream:
    """Tokens of one stream with what the block needs to process them.

    Attributes:
        x: `[B, S, dim]` hidden states.
        modulation: `[B, 6, dim]` timestep projection (before the block's scale-shift table).
        action: `[B, S, dim]` (or broadcastable) action embedding for this block, or None.
        rope: `(cos, sin)`, each `[1, S, 1, head_dim]`.
    """

    x: torch.Tensor
    modulation: torch.Tensor
    action: torch.Tensor | None
    rope: tuple[torch.Tensor, torch.Tensor]


@dataclass
class LayerKV:
    """Cached history keys and values of one block, each `[B, heads, S_hist, head_dim]`."""

    key: torch.Tensor
    value: torch.Tensor


def _qkv(attn: WanAttention, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(x)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(x).unflatten(2, (attn.heads, -1))
    q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def _attend(attn: WanAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2, 3).type_as(q)
    return attn.to_out[1](attn.to_out[0](out))


def _self_attn_input(block: WanTransformerBlock, stream: Stream) -> tuple[torch.Tensor, tuple]:
    shift, scale, gate, c_shift, c_scale, c_gate = (block.scale_shift_table + stream.modulation.float()).chunk(6, dim=1)
    x_in = (block.norm1(stream.x.float()) * (1 + scale) + shift).type_as(stream.x)
    if stream.action is not None:
        x_in = x_in + stream.action.to(x_in.dtype)
    return x_in, (gate, c_shift, c_scale, c_gate)


def _finish(
    block: WanTransformerBlock,
    adapter: nn.Linear,
    x: torch.Tensor,
    attn_out: torch.Tensor,
    mods: tuple,
    context: torch.Tensor,
) -> torch.Tensor:
    gate, c_shift, c_scale, c_gate = mods
    x = (x.float() + adapter(attn_out) * gate).type_as(x)
    x = x + block.attn2(block.norm2(x.float()).type_as(x), context, None, None)
    ff_in = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
    return (x.float() + block.ffn(ff_in).float() * c_gate).type_as(x)


def astra_block(
    block: WanTransformerBlock,
    attn: WanAttention,
    adapter: nn.Linear,
    chunk: Stream,
    history: Stream | None,
    context: torch.Tensor,
    block_causal: bool,
    cached: LayerKV | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, LayerKV | None]:
    """Run one block with self-attention `attn` (the block's own `attn1`, or a separate world's copy).
    Returns the new chunk states, new history states (None when served from `cached` or absent) and the
    history keys/values (for caching)."""
    c_in, c_mods = _self_attn_input(block, chunk)
    qc, kc, vc = _qkv(attn, c_in, chunk.rope)

    h_mods = qh = None
    kv = cached
    if cached is None and history is not None:
        h_in, h_mods = _self_attn_input(block, history)
        qh, kh, vh = _qkv(attn, h_in, history.rope)
        kv = LayerKV(kh, vh)

    if kv is None:
        c_out = _attend(attn, qc, kc, vc)
    else:
        keys, values = torch.cat([kv.key, kc], dim=2), torch.cat([kv.value, vc], dim=2)
        c_out = _attend(attn, qc, keys, values)

    new_chunk = _finish(block, adapter, chunk.x, c_out, c_mods, context)
    new_history = None
    if qh is not None:
        h_out = _attend(attn, qh, kv.key, kv.value) if block_causal else _attend(attn, qh, keys, values)
        new_history = _finish(block, adapter, history.x, h_out, h_mods, context)
    return new_chunk, new_history, kv
