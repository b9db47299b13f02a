"""Spatial action embeddings (ours, `extensions.spatial`): an action embedding that varies across the image.

Wan tokens carry no absolute position in their hidden states (RoPE acts only inside attention), so an action
embedding broadcast to every token of a latent frame cannot say *where* the image should change. With this
extension each expert gives three embeddings, mixed per token as `e_1 + x e_x + y e_y` with the token's image
coordinates x, y in [-1, 1], the way camera models' per-pixel ray (Pluecker) embeddings are affine in
(x, y, 1). Off, each expert gives one embedding, and every token of a frame gets it as it is.
"""

from __future__ import annotations

import torch

from .config import AstraConfig

SPATIAL_BASIS = ("1", "x", "y")


def embeddings_per_expert(config: AstraConfig) -> int:
    """How many embeddings of the model's width each expert gives: one per `SPATIAL_BASIS` function, else 1."""
    return len(SPATIAL_BASIS) if config.extensions.spatial else 1


def spatial_basis(positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[S, 3]` values of (1, x, y) at token positions `[S, 3]` (frame, row, col) of a `height x width`
    token grid, with x and y in [-1, 1] at the first and last column and row."""
    y = positions[:, 1].float() * 2 / max(height - 1, 1) - 1
    x = positions[:, 2].float() * 2 / max(width - 1, 1) - 1
    return torch.stack([torch.ones_like(x), x, y], dim=-1)


def at_tokens(embedding: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Per-token action embedding `[B, S, dim]` from `[B, S or 1, dim]`, or from spatial coefficients
    `[B, S or 1, 3 * dim]` mixed with the tokens' `basis` `[S, 3]`."""
    if basis is None:
        return embedding
    coeffs = embedding.unflatten(-1, (basis.shape[-1], -1))
    return torch.einsum("bskd,sk->bsd", coeffs.expand(-1, basis.shape[0], -1, -1), basis.to(coeffs))
