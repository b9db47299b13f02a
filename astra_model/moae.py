"""Mixture of Action Experts (MoAE): every action modality mapped into one space, then per-block experts.

Each modality has its own linear encoder `Linear(grouped_dim + 1, unified_dim)`; the extra input is the
history flag (1 for history tokens, 0 for tokens being generated, as in the release). A router then
mixes experts `Linear(unified_dim, dim)`, one set per transformer block, whose output is added to the
self-attention input of that block.

Routing:
- `learned` (paper): one global router `Linear(unified_dim, num_experts)`, softmax, top-k, weights
  renormalised over the chosen experts, plus a Switch-Transformer load-balancing loss.
- `modality` (release): each modality always goes to its own expert with weight 1.

Experts start at zero, so a fresh model's action path adds exactly nothing to the frozen backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .action_field import ActionField
from .config import AstraConfig
from .local_motion import LocalMotion


@dataclass
class Routed:
    """Unified action features and their expert gates.

    Attributes:
        features: `[B, N, unified_dim]` per (modality group, latent frame).
        gates: `[B, N, num_experts]` dense mixing weights (zeros for experts not chosen).
    """

    features: torch.Tensor
    gates: torch.Tensor


class MixtureOfActionExperts(nn.Module):
    def __init__(self, config: AstraConfig, num_blocks: int) -> None:
        super().__init__()
        cfg = config.moae
        self.config = config
        self.encoders = nn.ModuleDict(
            {name: nn.Linear(config.action_input_dim(name), cfg.unified_dim) for name in config.modalities}
        )
        self.router = nn.Linear(cfg.unified_dim, cfg.num_experts) if cfg.routing == "learned" else None
        width = config.dim * (len(SPATIAL_BASIS) if cfg.spatial else 1)
        self.experts = nn.ModuleList(
            nn.ModuleList(nn.Linear(cfg.unified_dim, width) for _ in range(cfg.num_experts)) for _ in range(num_blocks)
        )
        # (row shift, column shift, log-zoom) per latent frame; see `motion_offsets`.
        self.motion = nn.Linear(cfg.unified_dim, 3) if cfg.motion else None
        self.local_motion = LocalMotion(config.latent_channels, cfg.unified_dim) if cfg.local_motion else None
        # A token is 1 x 2 x 2 latent pixels (Wan's patch), which is what the renderer predicts.
        render_dim = 4 * config.latent_channels if cfg.field_render else 0
        self.field = (
            ActionField(cfg.unified_dim, config.dim, num_blocks, cfg.field_hidden, render_dim=render_dim)
            if cfg.action_field
            else None
        )
        self.reset_experts()

    @torch.no_grad()
    def reset_experts(self) -> None:
        """Zero every expert (and the motion heads and field) so the action path starts as an exact no-op."""
        heads = [expert for block_experts in self.experts for expert in block_experts]
        heads += [self.motion] if self.motion is not None else []
        for head in heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        if self.local_motion is not None:
            self.local_motion.reset()
        if self.field is not None:
            self.field.reset()

    def field_embedding(
        self, routed: list[Routed], positions: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`[B, F * S, blocks, dim]` action field of the chunk tokens at `positions` `[F * S, 3]` (frame, row,
        column) of a `height x width` token grid (`moae.action_field`), and its renderer's drawing of
        their clean latents `[B, F * S, 4 C]` (`moae.field_render`, else None)."""
        xy = spatial_basis(positions, height, width)[:, 1:]
        outputs = [self.field(item.features, item.gates.sum(dim=-1, keepdim=True), xy) for item in routed]
        embedding = sum(out for out, _ in outputs)
        rendered = sum(r for _, r in outputs) if self.field.renderer is not None else None
        return embedding, rendered

    def field_drawing(self, routed: list[Routed], positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The renderer's drawing alone, as `field_embedding` gives it, without running the field."""
        xy = spatial_basis(positions, height, width)[:, 1:]
        return sum(self.field.draw(item.features, xy) for item in routed)

    @property
    def moves(self) -> bool:
        """Whether the actions move the generated tokens' rotary positions (either motion head)."""
        return self.motion is not None or self.local_motion is not None

    def encode(self, grouped: dict[str, torch.Tensor], history_flag: float) -> dict[str, torch.Tensor]:
        """Project each modality's `[B, F, grouped_dim]` actions (standardised with `config.action_stats`,
        flag appended) to `[B, F, unified_dim]`."""
        out = {}
        for name, value in grouped.items():
            if name in self.config.action_stats:
                mean, std = (self._grouped_stat(name, key).to(value) for key in ("mean", "std"))
                value = (value - mean) / std
            flag = torch.full_like(value[..., :1], history_flag)
            out[name] = self.encoders[name](torch.cat([value, flag], dim=-1))
        return out

    def _grouped_stat(self, name: str, key: str) -> torch.Tensor:
        per_frame = torch.tensor(self.config.action_stats[name][key])
        return per_frame.repeat(self.config.stacked_frames)

    def route(self, encoded: dict[str, torch.Tensor]) -> tuple[list[Routed], torch.Tensor]:
        """Gates for the encoded actions, and the load-balancing loss (0 for modality routing)."""
        if self.router is None:
            routed = [self._fixed_route(name, feats) for name, feats in encoded.items()]
            return routed, next(iter(encoded.values())).new_zeros(())
        features = torch.stack(list(encoded.values())).sum(dim=0)
        probs = self.router(features).softmax(dim=-1)
        top_w, top_i = probs.topk(self.config.moae.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_w / top_w.sum(dim=-1, keepdim=True))
        return [Routed(features, gates)], self._load_balance_loss(probs, top_i)

    def _fixed_route(self, name: str, features: torch.Tensor) -> Routed:
        gates = features.new_zeros(*features.shape[:-1], self.config.moae.num_experts)
        gates[..., self.config.expert_of(name)] = 1.0
        return Routed(features, gates)

    def _load_balance_loss(self, probs: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        # Switch Transformer: E * sum_e (fraction of assignments to e) * (mean router probability of e).
        num_experts = probs.shape[-1]
        assigned = nn.functional.one_hot(top_i, num_experts).float().sum(dim=-2)
        fraction = assigned.flatten(0, -2).mean(dim=0) / top_i.shape[-1]
        mean_prob = probs.flatten(0, -2).mean(dim=0)
        return num_experts * (fraction * mean_prob).sum()

    def block_embedding(self, block: int, routed: list[Routed]) -> torch.Tensor:
        """`[B, N, dim]` action embedding for transformer block `block` (`[B, N, 3 * dim]` when spatial:
        the coefficients of `SPATIAL_BASIS`, see `at_tokens`)."""
        total = None
        for item in routed:
            for e, expert in enumerate(self.experts[block]):
                term = item.gates[..., e : e + 1] * expert(item.features)
                total = term if total is None else total + term
        return total

    def motion_offsets(
        self, routed: list[Routed], height: int, width: int, latest: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`[B, F * height * width, 3]` (frame, row, column) offsets of a chunk's rotary positions.

        Global head: each latent frame's features give a shift and a log-zoom `s`; summed over the chunk
        so far, they are frame j's motion since the history. A token at (r, c) moves by
        `((r - r_mid) (e^s - 1) + shift_r, (c - c_mid) (e^s - 1) + shift_c)`: zoom about the image
        centre, then shift. The local head adds each token's own shift, read from `latest`
        `[B, C, 2 height, 2 width]`, the latest history frame's latents (`astra_model.local_motion`).
        Samples whose actions were dropped (zero gates) do not move."""
        if self.local_motion is not None and latest is None:
            raise ValueError("moae.local_motion needs the latest history frame: give the model a history")
        b, f = routed[0].gates.shape[:2]
        offsets = routed[0].features.new_zeros(b, f, height * width, 2)
        for item in routed:
            kept = item.gates.sum(dim=-1, keepdim=True)
            if self.motion is not None:
                offsets = offsets + self._view_motion(kept * self.motion(item.features), height, width)
            if self.local_motion is not None:
                offsets = offsets + self.local_motion(latest, item.features, kept)
        return nn.functional.pad(offsets, (1, 0)).flatten(1, 2)

    @staticmethod
    def _view_motion(motion: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`[B, F, height * width, 2]` row/column offsets of the global head's `[B, F, 3]` outputs."""
        shift_r, shift_c, zoom = motion.cumsum(dim=1)[..., None, None].unbind(dim=2)
        rows = torch.arange(height, dtype=motion.dtype, device=motion.device).view(height, 1) - (height - 1) / 2
        cols = torch.arange(width, dtype=motion.dtype, device=motion.device).view(1, width) - (width - 1) / 2
        scale = zoom.exp() - 1
        grid = (*scale.shape[:2], height, width)
        dr, dc = (rows * scale + shift_r).expand(grid), (cols * scale + shift_c).expand(grid)
        return torch.stack([dr, dc], dim=-1).flatten(2, 3)


def encoder_with_targets(weight: torch.Tensor, per_frame: int, frames: int) -> torch.Tensor:
    """A modality encoder's weight `[U, frames * per_frame + 1]`, trained on commands read as changes,
    widened to read `[change, target]` per frame (`config.command_targets`): `[U, frames * 2 per_frame + 1]`
    (`frames`: `config.stacked_frames`). The target columns start at zero, so the widened encoder computes
    what the trained one did."""
    if weight.shape[1] != frames * per_frame + 1:
        raise ValueError(f"encoder weight {list(weight.shape)} does not read {frames} x {per_frame} commands + flag")
    change = weight[:, :-1].unflatten(1, (frames, per_frame))
    wide = torch.cat([change, torch.zeros_like(change)], dim=2).flatten(1)
    return torch.cat([wide, weight[:, -1:]], dim=1)


SPATIAL_BASIS = ("1", "x", "y")


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
