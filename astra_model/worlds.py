"""Separate worlds (`AstraConfig.separate_worlds`): a modality's own copy of every weight Astra trains.

One model serves several embodiments, which share the frozen backbone and VAE. By default they also
share the trained weights (self-attention, ACT-Adapters, history embedders, MoAE and the extensions'
modules that read its features), so training one world moves the others: an arm trained alone at its
partings forgets how a mobile robot's view turns.
A separate world runs the same frozen blocks with its own `TrainedWeights`, which start as a copy of the
shared ones; its batches then train only its copy.
"""

from __future__ import annotations

import copy

from torch import nn

from .config import AstraConfig
from .extensions import WorldExtensions
from .history import HistoryEmbedder
from .moae import MixtureOfActionExperts


class TrainedWeights(nn.Module):
    """The weights Astra trains on top of the frozen backbone, for one world or for the shared model.

    Attributes:
        attn1: each backbone block's self-attention (`WanAttention`), in block order.
        adapters: one ACT-Adapter `Linear(dim, dim)` per block.
        history_embedder: patch embedders of the history slots.
        moae: Mixture of Action Experts.
        extensions: the extensions' modules that read MoAE's features (`astra_model.extensions`).
    """

    def __init__(
        self,
        attn1: nn.ModuleList,
        adapters: nn.ModuleList,
        history_embedder: HistoryEmbedder,
        moae: MixtureOfActionExperts,
        extensions: WorldExtensions,
    ) -> None:
        super().__init__()
        self.attn1 = attn1
        self.adapters = adapters
        self.history_embedder = history_embedder
        self.moae = moae
        self.extensions = extensions

    def copy(self) -> TrainedWeights:
        """An independent copy (the MoAE keeps referring to the same `AstraConfig`)."""
        config = self.moae.config
        return copy.deepcopy(self, memo={id(config): config})


def world_of(actions, separate: list[str]) -> str | None:
    """The separate world a call's `actions` (modality -> tensor, or None) belong to, else None.

    Raises ValueError when a separate modality comes with any other: its weights cannot serve both."""
    mine = [name for name in actions or {} if name in separate]
    if not mine:
        return None
    if len(actions) > 1:
        raise ValueError(
            f"separate_worlds: {mine[0]!r} runs on its own weights, so its actions must come alone; "
            f"got {sorted(actions)}"
        )
    return mine[0]


def guidance_scale_of(actions, config: AstraConfig) -> float:
    """The model's AFG scale for a call's `actions` (modality -> anything; the names decide): the scale of
    the separate world they command (`config.sampler.world_guidance_scales`), else `guidance_scale`."""
    return config.sampler.scale_for(world_of(actions, config.separate_worlds))


SHARED_WORLD = "shared"


def world_modalities(config: AstraConfig) -> dict[str, tuple[str, ...]]:
    """Each world the model simulates -> the modalities that command it: a separate world is named after
    its modality; the other modalities share the shared weights' world, `SHARED_WORLD`."""
    shared = tuple(name for name in config.modalities if name not in config.separate_worlds)
    worlds = {SHARED_WORLD: shared} if shared else {}
    return worlds | {name: (name,) for name in config.separate_worlds}


def world_of_modality(modality: str, config: AstraConfig) -> str:
    """The world a modality commands (see `world_modalities`)."""
    if modality not in config.modalities:
        raise ValueError(f"unknown modality {modality!r}; the model has {sorted(config.modalities)}")
    return modality if modality in config.separate_worlds else SHARED_WORLD
