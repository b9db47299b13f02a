"""Bounded multi-scale history memory (FramePack-style), as Astra packs it.

The memory keeps the first latent frame and the most recent ones; older frames fall out, so a rollout
of any length holds at most `HistoryConfig.capacity` latent frames. For the transformer the retained
frames are packed as

    [4x group | 2x group | 1x: first frame, latest frame]

and embedded with separate patch embedders of kernel (4, 8, 8), (2, 4, 4) and (1, 2, 2): older frames
cost fewer tokens. Each token's rotary position is the true (frame, row, column) it covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F

from .config import HistoryConfig
from .rope import grid_positions


@dataclass
class History:
    """Clean past latents and their true latent-frame indices.

    Attributes:
        latents: `[B, C, T, h, w]`, oldest first.
        indices: `[T]` strictly increasing latent-frame indices (the first frame of a rollout is 0).
        actions: modality -> `[B, T, A]` commands that produced each frame, grouped per latent frame as
            the model groups a chunk's actions; zeros where unknown (e.g. the frames a rollout starts
            from).
    """

    latents: torch.Tensor
    indices: torch.Tensor
    actions: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise ValueError(f"history latents must be [B, C, T, h, w], got {list(self.latents.shape)}")
        b, _, t = self.latents.shape[:3]
        if self.indices.shape != (t,):
            raise ValueError(f"history indices must be [{t}], got {list(self.indices.shape)}")
        if len(self.indices) > 1 and not bool((self.indices[1:] > self.indices[:-1]).all()):
            raise ValueError(f"history indices must be strictly increasing, got {self.indices.tolist()}")
        for name, value in self.actions.items():
            if value.ndim != 3 or value.shape[:2] != (b, t):
                raise ValueError(f"history actions[{name!r}] must be [{b}, {t}, A], got {list(value.shape)}")

    @classmethod
    def from_latents(cls, latents: torch.Tensor) -> History:
        """History of consecutive frames 0..T-1."""
        return cls(latents, torch.arange(latents.shape[2]))

    @property
    def length(self) -> int:
        return int(self.latents.shape[2])

    @property
    def next_index(self) -> int:
        return int(self.indices[-1]) + 1

    def append(
        self, latents: torch.Tensor, layout: HistoryConfig, actions: Mapping[str, torch.Tensor] | None = None
    ) -> History:
        """Add `[B, C, F, h, w]` new frames (and the `[B, F, A]` grouped commands that produced them) and drop
        what no slot can hold any more. A modality known on one side only gets zeros on the other."""
        f = latents.shape[2]
        new_idx = torch.arange(self.next_index, self.next_index + f)
        actions = dict(actions or {})
        merged_actions = {}
        for name in {**self.actions, **actions}:
            like = self.actions.get(name, actions.get(name))
            old = self.actions.get(name, like.new_zeros(like.shape[0], self.length, like.shape[2]))
            new = actions.get(name, like.new_zeros(like.shape[0], f, like.shape[2]))
            merged_actions[name] = torch.cat([old, new.to(old)], dim=1)
        merged = History(torch.cat([self.latents, latents], dim=2), torch.cat([self.indices, new_idx]), merged_actions)
        return merged.trimmed(layout)

    def trimmed(self, layout: HistoryConfig) -> History:
        """Keep the first frame (if the layout has its slot) and the most recent frames that fit."""
        if self.length <= layout.capacity:
            return self
        recent = layout.capacity - int(layout.first_frame)
        keep = list(range(self.length - recent, self.length))
        if layout.first_frame:
            keep = [0, *keep]
        keep_t = torch.tensor(keep)
        actions = {k: v[:, keep_t] for k, v in self.actions.items()}
        return History(self.latents[:, :, keep_t], self.indices[keep_t], actions)

    def repeat(self, n: int) -> History:
        """Each batch element repeated `n` times (for forked rollouts)."""
        actions = {k: v.repeat_interleave(n, dim=0) for k, v in self.actions.items()}
        return History(self.latents.repeat_interleave(n, dim=0), self.indices.clone(), actions)

    def tiled(self, n: int) -> History:
        """The whole batch stacked `n` times, `[all | all | ...]` (e.g. AFG's [cond | free] batch)."""
        actions = {k: torch.cat([v] * n) for k, v in self.actions.items()}
        return History(torch.cat([self.latents] * n), self.indices, actions)

    def with_latents(self, latents: torch.Tensor) -> History:
        """The same frames, indices and commands over other latents (e.g. noise-augmented ones)."""
        return replace(self, latents=latents)

    def group_actions(self, layout: HistoryConfig) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Commands per history token group, `[B, G, A]` in the embedder's token order (each group's
        frames averaged), and each group's scale (1, 2 or 4)."""
        groups = slot_groups(self.length, layout)
        pooled = {
            name: torch.stack([value[:, frames].mean(dim=1) for _, frames in groups], dim=1)
            for name, value in self.actions.items()
        }
        return pooled, [scale for scale, _ in groups]


@dataclass
class SlotLayout:
    """Which history frames (by position in `History.latents`) go to which scale."""

    x4: list[int]
    x2: list[int]
    x1: list[int]


def slot_layout(length: int, layout: HistoryConfig) -> SlotLayout:
    """Assign the `length` retained frames to slots; the most recent frames get the finest scale."""
    first = [0] if layout.first_frame and length > 0 else []
    recent = list(range(len(first), length))
    x1 = recent[len(recent) - min(layout.slots_1x, len(recent)) :]
    recent = recent[: len(recent) - len(x1)]
    x2 = recent[len(recent) - min(layout.slots_2x, len(recent)) :]
    recent = recent[: len(recent) - len(x2)]
    x4 = recent[len(recent) - min(layout.slots_4x, len(recent)) :]
    return SlotLayout(x4=x4, x2=x2, x1=first + x1)


def slot_groups(length: int, layout: HistoryConfig) -> list[tuple[int, list[int]]]:
    """`(scale, frames)` of every history token group, in token order `[4x | 2x | 1x]`.

    A group is what one patch-embedding step covers in time: `scale` frames, with a short group padded
    in front (the padding holds no frame, so it is not listed).
    """
    slots = slot_layout(length, layout)
    groups = []
    for scale, frames in ((4, slots.x4), (2, slots.x2), (1, slots.x1)):
        padded = [None] * ((-len(frames)) % scale) + frames
        for start in range(0, len(padded), scale):
            groups.append((scale, [f for f in padded[start : start + scale] if f is not None]))
    return groups


class HistoryEmbedder(nn.Module):
    """Patch embedders for the three history scales (trainable in Astra)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.proj_1x = nn.Conv3d(channels, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(channels, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(channels, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    @torch.no_grad()
    def init_from_patch_embedding(self, patch: nn.Conv3d) -> None:
        """Start every scale as the backbone's patch embedding of the averaged covered frames.

        The 2x/4x kernels are the 1x kernel tiled over their footprint and divided by the number of
        tiles, so a region of constant latents embeds exactly as the backbone would embed it.
        """
        for conv in (self.proj_1x, self.proj_2x, self.proj_4x):
            kt, kh, kw = conv.kernel_size
            tiles = kt * (kh // 2) * (kw // 2)
            conv.weight.copy_(patch.weight.repeat(1, 1, kt, kh // 2, kw // 2) / tiles)
            conv.bias.copy_(patch.bias)

    def group_tokens(self, scale: int, height: int, width: int) -> int:
        """Tokens one time group at `scale` (1, 2 or 4) embeds from `height x width` latents; a partial
        patch at the edge is padded, so it counts."""
        _, kh, kw = {1: self.proj_1x, 2: self.proj_2x, 4: self.proj_4x}[scale].kernel_size
        return math.ceil(height / kh) * math.ceil(width / kw)

    def forward(self, history: History, layout: HistoryConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the packed history.

        Returns:
            tokens `[B, S, dim]` in order [4x | 2x | 1x] and their positions `[S, 3]`.
        """
        slots = slot_layout(history.length, layout)
        tokens, positions = [], []
        for frames, conv, scale in (
            (slots.x4, self.proj_4x, 4),
            (slots.x2, self.proj_2x, 2),
            (slots.x1, self.proj_1x, 1),
        ):
            if frames:
                tok, pos = self._embed_scale(history, frames, conv, scale)
                tokens.append(tok)
                positions.append(pos)
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=0)

    def _embed_scale(
        self, history: History, frames: list[int], conv: nn.Conv3d, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kt = conv.kernel_size[0]
        idx = torch.tensor(frames)
        latents = history.latents[:, :, idx]
        true_index = history.indices[idx]
        # A short history leaves a group partly empty: pad it with zero latents in front, as the release does.
        pad_t = (-len(frames)) % kt
        if pad_t:
            latents = F.pad(latents, (0, 0, 0, 0, pad_t, 0))
            true_index = torch.cat([true_index[0] - torch.arange(pad_t, 0, -1), true_index])
        kh = conv.kernel_size[1]
        pad_h, pad_w = (-latents.shape[3]) % kh, (-latents.shape[4]) % kh
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h, 0, 0), mode="replicate")
        emb = conv(latents.to(conv.weight.dtype))
        _, _, ft, fh, fw = emb.shape
        positions = grid_positions(true_index[::kt][:ft], fh, fw, stride=scale)
        return emb.flatten(2).transpose(1, 2), positions
