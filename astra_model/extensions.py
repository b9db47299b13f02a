"""Our additions to Astra, and the one seam through which the core reaches them.

Astra's core (`astra_model.model`) is the paper's: frozen Wan blocks, ACT-Adapters, MoAE, the history
memory and action-free guidance. Everything else the project added is an extension: one module, one
config entry, and an exact no-op while it is off or untrained (its output layer starts at zero).

| extension | module | config | acts on |
|---|---|---|---|
| spatial embeddings | `spatial` | `extensions.spatial` | each token's action embedding |
| motion embeddings | `view_motion` | `extensions.motion` | the chunk tokens' rotary positions |
| local motion head | `local_motion` | `extensions.local_motion` | the chunk tokens' rotary positions |
| action field and its renderer | `action_field` | `extensions.action_field` | each chunk token's action embedding |
| pose warp | `pose_warp` | `extensions.pose_warp` | the chunk's tokens |
| relative commands and targets | `relative_commands` | `extensions.relative_commands` | the commands as read |
| separate worlds | `worlds` | `worlds.<name>.own_weights` | which trained weights a call runs on |
| fixed-camera anchoring | `anchoring` | `worlds.<name>.fixed_camera` | the frames a rollout shows |

The first five act inside the denoiser's forward pass. `condition` gathers what they do to one pass in a
`Conditioning`, and the forward pass applies it at four points and nowhere else: the chunk's tokens, the
chunk's rotary positions, and each block's action embedding of the chunk and of the history. The last
three act outside it, each at one call: `as_model_reads` (relative commands), `weights_for` (separate
worlds) and the rollout's decoded frames (anchoring).

The modules of the motion heads and the action field are trained weights of a world (`WorldExtensions`,
part of `astra_model.worlds.TrainedWeights`); the pose warp belongs to a modality and is the model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .action_field import ActionField
from .config import AstraConfig
from .history import History
from .local_motion import LocalMotion
from .moae import Routed, RoutedActions
from .rope import moved
from .spatial import at_tokens, spatial_basis
from .view_motion import ViewMotion


class WorldExtensions(nn.Module):
    """The extensions' trained modules in the weights of some worlds; each None while its extension is off.

    Args:
        config: the model's config.
        num_blocks: transformer blocks.
        worlds: the worlds that run on these weights (one with its own weights, or those on the shared ones).

    Attributes:
        motion: the view's motion head (`extensions.motion`).
        local_motion: the per-token motion head (`extensions.local_motion`).
        action_field: the action field, with its renderer, where `extensions.action_field` names one of
            `worlds`.
    """

    def __init__(self, config: AstraConfig, num_blocks: int, worlds: Iterable[str]) -> None:
        super().__init__()
        ext, unified = config.extensions, config.moae.unified_dim
        self.motion = ViewMotion(unified) if ext.motion else None
        self.local_motion = LocalMotion(config.latent_channels, unified) if ext.local_motion else None
        field = ext.action_field
        # A token is 1 x 2 x 2 latent pixels (Wan's patch), which is what the renderer draws.
        render_dim = 4 * config.latent_channels if field is not None and field.render else 0
        self.action_field = (
            ActionField(unified, config.dim, num_blocks, field.hidden, render_dim=render_dim)
            if field is not None and set(worlds) & set(field.worlds)
            else None
        )

    def offsets(self, routed: list[Routed], height: int, width: int, latest: torch.Tensor | None) -> torch.Tensor:
        """`[B, F * height * width, 3]` (frame, row, column) moves of a chunk's rotary positions: the view's
        motion plus each token's own, read from `latest` `[B, C, 2 height, 2 width]`, the latest history
        frame's latents. Tokens move within their frame; samples whose actions were dropped (zero gates) do
        not move."""
        if self.local_motion is not None and latest is None:
            raise ValueError("extensions.local_motion needs the latest history frame: give the model a history")
        b, f = routed[0].gates.shape[:2]
        offsets = routed[0].features.new_zeros(b, f, height * width, 2)
        for item in routed:
            kept = item.gates.sum(dim=-1, keepdim=True)
            if self.motion is not None:
                offsets = offsets + self.motion(item.features, kept, height, width)
            if self.local_motion is not None:
                offsets = offsets + self.local_motion(latest, item.features, kept)
        return nn.functional.pad(offsets, (1, 0)).flatten(1, 2)

    @property
    def moves(self) -> bool:
        """Whether the actions move the generated tokens' rotary positions (either motion head)."""
        return self.motion is not None or self.local_motion is not None


@dataclass
class ChunkInputs:
    """What one forward pass gives the extensions.

    Attributes:
        world: the world the actions command (None without actions).
        actions: modality -> `[B, F * temporal_ratio, D]` commands, as the model reads them.
        routed: MoAE's routed features of the pass (None without actions).
        keep: `[B]` bool, False where a sample's actions are dropped; None keeps every sample's.
        history: the history, if any.
        positions: `[F * S, 3]` (frame, row, column) of the chunk's tokens, frame-major.
        history_positions: `[S_h, 3]` those of the history's tokens, when the pass embeds them.
        height, width: the token grid of one latent frame.
    """

    world: str | None
    actions: Mapping[str, torch.Tensor] | None
    routed: RoutedActions | None
    keep: torch.Tensor | None
    history: History | None
    positions: torch.Tensor
    history_positions: torch.Tensor | None
    height: int
    width: int


@dataclass
class Conditioning:
    """What the extensions do to one forward pass; a part is None where none of them does anything.

    Attributes:
        tokens: `[B, F * S, dim]` added to the chunk's patch embeddings (pose warp).
        offsets: `[B, F * S, 3]` moves of the chunk tokens' rotary positions (motion heads).
        chunk_basis: `[F * S, 3]` the chunk tokens' spatial basis (spatial embeddings).
        history_basis: `[S_h, 3]` the history tokens' spatial basis.
        field: `[B, F * S, blocks, dim]` each chunk token's own action embedding per block (action field).
        render: `[B, F * S, 4 C]` the renderer's drawing of the chunk's clean latents.
    """

    tokens: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    chunk_basis: torch.Tensor | None = None
    history_basis: torch.Tensor | None = None
    field: torch.Tensor | None = None
    render: torch.Tensor | None = None

    def chunk_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The chunk's patch embeddings `[B, F * S, dim]`, with what the extensions add."""
        return x if self.tokens is None else x + self.tokens.to(x.dtype)

    def chunk_rope(self, rope: tuple[torch.Tensor, torch.Tensor], head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's rotary tables at its tokens' moved positions."""
        return rope if self.offsets is None else moved(rope, self.offsets, head_dim)

    def chunk_action(self, block: int, embedding: torch.Tensor) -> torch.Tensor:
        """Block `block`'s action embedding `[B, F * S, dim]` of each chunk token, from MoAE's `[B, F * S, width]`
        (its latent frame's, at every token of the frame)."""
        per_token = at_tokens(embedding, self.chunk_basis)
        return per_token if self.field is None else per_token + self.field[:, :, block]

    def history_action(self, embedding: torch.Tensor) -> torch.Tensor:
        """A block's action embedding `[B, S_h, dim]` of each history token, from MoAE's `[B, S_h or 1, width]`."""
        return at_tokens(embedding, self.history_basis)


def condition(
    config: AstraConfig, extensions: WorldExtensions, pose_warp: nn.ModuleDict, inputs: ChunkInputs
) -> Conditioning:
    """What the extensions do to a forward pass with `inputs` (nothing without actions), run on the
    extensions of the world's weights and the model's `pose_warp` (modality -> `PoseWarp`)."""
    rows, cols, history = inputs.height, inputs.width, inputs.history
    out = Conditioning()
    if inputs.routed is None:
        return out
    warp = next((name for name in inputs.actions if name in pose_warp), None)
    if warp is not None and history is not None:
        latest = history.latents[:, :, -1]
        out.tokens = pose_warp[warp](latest, inputs.actions[warp], config.temporal_ratio, inputs.keep)
    if extensions.moves:
        latest = history.latents[:, :, -1] if history is not None else None
        out.offsets = extensions.offsets(inputs.routed.chunk, rows, cols, latest)
    if config.extensions.spatial:
        out.chunk_basis = spatial_basis(inputs.positions, rows, cols)
        if inputs.history_positions is not None:
            out.history_basis = spatial_basis(inputs.history_positions, rows, cols)
    if extensions.action_field is not None and inputs.world in config.extensions.action_field.worlds:
        out.field, out.render = extensions.action_field.embed(inputs.routed.chunk, inputs.positions, rows, cols)
    return out
