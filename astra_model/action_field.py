"""Action field: each generated token's action embedding as a nonlinear function of the commands and
of where the token sits in the image (ours, `extensions.action_field`).

A fixed camera sees a joint command only where the links it drives are, and where they are is a
nonlinear function of the joint angles (forward kinematics, then projection). MoAE's embeddings are
linear in the action features and at most affine across the image (`extensions.spatial`), so no expert can
say "the forearm will cover this token". The field is a small MLP, as neural fields are, read at
every generated token from:
- that latent frame's action features (MoAE's unified space);
- the token's image coordinates x, y in [-1, 1] and their sines and cosines at a few octaves.

Its output, one embedding per block, is added to the experts' embedding of the token. Only the chunk
tokens get it: history tokens show where the arm was. The last layer starts at zero, so a fresh field
adds nothing and the model reproduces one without it exactly.

With `render_dim` > 0 (`extensions.action_field.render`) a second MLP of the same inputs, the renderer, predicts
the token's clean latent, and the field reads that drawing beside its inputs. Through the flow loss
alone the field learns where the links go only as far as the frozen network downstream makes use of
it: measured on the demo arm world, a field trained that way draws the arm no better with its own commands
than with another clip's. The renderer learns from its own target only (`field_render_weight`; its
inputs and its drawing are detached), so it can be fitted on its own, without the transformer, before
the field learns to use it. The field's weights from the drawing start at zero when a field saved
without one is widened (`widened`), so the model then computes what it did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .init import zero_
from .moae import Routed
from .spatial import spatial_basis


class ActionField(nn.Module):
    def __init__(
        self,
        unified_dim: int,
        dim: int,
        blocks: int,
        hidden: int = 128,
        octaves: int = 3,
        render_dim: int = 0,
    ) -> None:
        super().__init__()
        self.blocks, self.dim, self.octaves = blocks, dim, octaves
        inputs = unified_dim + 2 + 4 * octaves
        self.net = _mlp(inputs + render_dim, hidden, blocks * dim)
        self.renderer = _mlp(inputs, hidden, render_dim) if render_dim else None
        zero_(self.net[-1])

    def embed(
        self, routed: list[Routed], positions: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`[B, F * S, blocks, dim]` the field of the chunk tokens at `positions` `[F * S, 3]` (frame, row,
        column) of a `height x width` token grid, and the renderer's drawing of their clean latents
        `[B, F * S, 4 C]` (None without a renderer)."""
        xy = spatial_basis(positions, height, width)[:, 1:]
        outputs = [self(item.features, item.gates.sum(dim=-1, keepdim=True), xy) for item in routed]
        embedding = sum(out for out, _ in outputs)
        rendered = sum(r for _, r in outputs) if self.renderer is not None else None
        return embedding, rendered

    def drawing(self, routed: list[Routed], positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The renderer's drawing alone, as `embed` gives it, without running the field."""
        xy = spatial_basis(positions, height, width)[:, 1:]
        return sum(self.draw(item.features, xy) for item in routed)

    def encode_position(self, xy: torch.Tensor) -> torch.Tensor:
        """`[S, 2 + 4 octaves]`: x, y `[S, 2]` and sin, cos of `2^k pi x`, `2^k pi y` for k < octaves."""
        frequencies = math.pi * 2.0 ** torch.arange(self.octaves, dtype=xy.dtype, device=xy.device)
        angles = xy[:, None, :] * frequencies[:, None]  # [S, octaves, 2]
        return torch.cat([xy, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)

    def forward(
        self, features: torch.Tensor, weight: torch.Tensor, xy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings `[B, F * S, blocks, dim]` of a chunk's tokens, frame-major, and the renderer's
        prediction of their clean latents `[B, F * S, render_dim]` (None without a renderer).

        Args:
            features: `[B, F, unified_dim]` action features per latent frame.
            weight: `[B, F, 1]` how much of each frame's features the router kept (0 where the actions
                were dropped, so those samples get nothing).
            xy: `[F * S, 2]` each token's image coordinates (x, y) in [-1, 1], frame-major.
        """
        inputs = self._inputs(features, xy)
        rendered = None
        if self.renderer is not None:
            # The renderer learns from its own target alone, so it reads its inputs detached.
            rendered = self.renderer(inputs.detach())
            inputs = torch.cat([inputs, rendered.detach()], dim=-1)
        out = self.net(inputs) * weight.repeat_interleave(xy.shape[0] // features.shape[1], dim=1)
        return out.unflatten(-1, (self.blocks, self.dim)), rendered

    def draw(self, features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """The renderer's drawing `[B, F * S, render_dim]` alone, as `forward` gives it, without the field."""
        return self.renderer(self._inputs(features, xy).detach())

    def _inputs(self, features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """`[B, F * S, unified_dim + 2 + 4 octaves]`: each token's frame features beside its position."""
        b, f = features.shape[:2]
        position = self.encode_position(xy.to(features.dtype)).expand(b, -1, -1)
        return torch.cat([features.repeat_interleave(xy.shape[0] // f, dim=1), position], dim=-1)


def token_grid(latents: torch.Tensor) -> torch.Tensor:
    """`[B * F, 4 C, h/2, w/2]`: each frame of `[B, C, F, h, w]` latents as Wan's 1 x 2 x 2 patches, each
    token's 2 x 2 latent pixels channel-major as `pixel_unshuffle` orders them."""
    return F.pixel_unshuffle(latents.transpose(1, 2).flatten(0, 1), 2)


def latent_tokens(latents: torch.Tensor) -> torch.Tensor:
    """`[B, F * h/2 * w/2, 4 C]`: the tokens of `token_grid` in a sequence, frame-major: what the renderer
    draws."""
    tokens = token_grid(latents)
    return tokens.flatten(2).transpose(1, 2).reshape(latents.shape[0], -1, tokens.shape[1])


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, outputs)
    )


def widened(old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """A field tensor saved at a narrower hidden width, placed in `fresh` (the same tensor of a wider field,
    as initialised): the saved block leads, its units read none of the new ones, and the new units keep
    their initial weights. The widened field computes what the saved one did, and its new units, whose
    outputs the saved last layer gives zero weight, start learning at once."""
    if old.dim() != fresh.dim() or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
        raise ValueError(f"a field tensor {list(old.shape)} does not fit in one {list(fresh.shape)}")
    out = fresh.clone()
    if old.dim() == 2:
        out[: old.shape[0], old.shape[1] :] = 0
    out[tuple(slice(n) for n in old.shape)] = old
    return out
