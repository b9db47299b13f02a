"""Wan's 3-D rotary position embedding at arbitrary (frame, row, column) token positions.

diffusers' `WanRotaryPosEmbed` only covers a dense grid starting at frame 0. Astra places history
tokens at their true frame indices and compressed tokens at the positions they cover, so positions
are given explicitly here. The frequencies and layout match `WanRotaryPosEmbed` exactly, so a dense
grid from 0 reproduces the backbone's own embedding.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels per axis (frame, height, width), split as Wan does."""
    h_dim = w_dim = 2 * (head_dim // 6)
    return head_dim - h_dim - w_dim, h_dim, w_dim


def rotary_embedding(
    positions: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin tables for tokens at `positions`.

    Args:
        positions: `[S, 3]` integer (frame, row, column) per token, in units of 1x patches.
        head_dim: attention head width.

    Returns:
        `(cos, sin)`, each `[1, S, 1, head_dim]` float32, as `WanRotaryPosEmbed` returns them.
    """
    pos = positions.to(torch.float64)
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axis_dims(head_dim)):
        cos, sin = get_1d_rotary_pos_embed(
            dim, pos[:, axis], theta, use_real=True, repeat_interleave_real=True, freqs_dtype=torch.float64
        )
        cos_parts.append(cos)
        sin_parts.append(sin)
    cos = torch.cat(cos_parts, dim=1)[None, :, None, :]
    sin = torch.cat(sin_parts, dim=1)[None, :, None, :]
    return cos, sin


def grid_positions(frame_indices: torch.Tensor, height: int, width: int, stride: int = 1) -> torch.Tensor:
    """Positions `[len(frame_indices) * height * width, 3]` of a token grid, frame-major like Wan's flatten.

    `stride` spaces rows and columns for compressed tokens: one 2x token covers 2x2 1x-patches, so its
    position is that of its first covered patch.
    """
    f = frame_indices.to(torch.long).view(-1, 1, 1).expand(-1, height, width)
    r = (torch.arange(height) * stride).view(1, -1, 1).expand(len(frame_indices), -1, width)
    c = (torch.arange(width) * stride).view(1, 1, -1).expand(len(frame_indices), height, -1)
    return torch.stack([f, r, c], dim=-1).reshape(-1, 3)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of `x` `[B, S, heads, head_dim]` (Wan's convention)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def moved(
    rope: tuple[torch.Tensor, torch.Tensor], offsets: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables of `positions + offsets` from those of `positions`: rotations compose, R(p + d) = R(p) R(d),
    so zero offsets give the tables back exactly and gradients reach `offsets` `[B, S, 3]`.

    Returns `(cos, sin)`, each `[B, S, 1, head_dim]`.
    """
    cos, sin = rope
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=offsets.device) / dim)
        angles.append(offsets[..., axis : axis + 1].float() * freqs)
    angle = torch.cat(angles, dim=-1).repeat_interleave(2, dim=-1).unsqueeze(2)
    c, s = angle.cos(), angle.sin()
    return cos * c - sin * s, sin * c + cos * s
