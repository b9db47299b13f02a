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

from .config import AstraConfig
from .init import zero_
from .spatial import embeddings_per_expert


@dataclass
class Routed:
    """Unified action features and their expert gates.

    Attributes:
        features: `[B, N, unified_dim]` per (modality group, latent frame).
        gates: `[B, N, num_experts]` dense mixing weights (zeros for experts not chosen).
    """

    features: torch.Tensor
    gates: torch.Tensor


@dataclass
class RoutedActions:
    """Routed MoAE features of one forward pass.

    Attributes:
        chunk: per latent frame of the chunk, `[B, F, .]`.
        history: per history token group `[B, G, .]`, or `[B, 1, .]` shared by every history token.
        history_tokens: tokens of each history group, or None for the shared form.
    """

    chunk: list[Routed]
    history: list[Routed]
    history_tokens: list[int] | None


class MixtureOfActionExperts(nn.Module):
    def __init__(self, config: AstraConfig, num_blocks: int) -> None:
        super().__init__()
        cfg = config.moae
        self.config = config
        self.encoders = nn.ModuleDict(
            {name: nn.Linear(config.action_input_dim(name), cfg.unified_dim) for name in config.modalities}
        )
        self.router = nn.Linear(cfg.unified_dim, cfg.num_experts) if cfg.routing == "learned" else None
        width = config.dim * embeddings_per_expert(config)
        self.experts = nn.ModuleList(
            nn.ModuleList(nn.Linear(cfg.unified_dim, width) for _ in range(cfg.num_experts)) for _ in range(num_blocks)
        )
        for block_experts in self.experts:
            for expert in block_experts:
                zero_(expert)

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

    def typical(self, name: str, width: int) -> torch.Tensor:
        """`[width]` the grouped command that reads as typical: the training mean, which standardises to
        zero, or zeros for a modality without statistics. It stands in for commands nobody knows (the
        ones that made a rollout's seed frames, when they are not given): a zero in the read space is no
        neutral command for every modality (a relative pose of zeros has a zero quaternion)."""
        if name not in self.config.action_stats:
            return torch.zeros(width)
        return self._grouped_stat(name, "mean")

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
        """`[B, N, width]` action embedding for transformer block `block`: `width` is the model's, times
        `embeddings_per_expert` (the coefficients `astra_model.spatial.at_tokens` mixes)."""
        total = None
        for item in routed:
            for e, expert in enumerate(self.experts[block]):
                term = item.gates[..., e : e + 1] * expert(item.features)
                total = term if total is None else total + term
        return total
