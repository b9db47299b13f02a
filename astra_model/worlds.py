"""Worlds: what one camera sees, commanded by some of the model's modalities.

One model simulates several worlds (the demo's: a mobile robot, an arm on a table, a free camera), which
share the frozen backbone and VAE. Everything that differs between them is said once, in
`AstraConfig.worlds`, by world name (`WorldConfig`): the modalities that command it, whether it runs on
its own trained weights, its guidance scale, and whether a fixed camera sees it (and so how its frames are
anchored). Modalities that no world names make one more world, `SHARED_WORLD`, so that a config that
names no world (the presets, the official release, models saved before worlds had names) simulates one
world commanded by every modality. A world is named by the user rather than by its modality because a
world is a scene and a camera, which several modalities may command together; models saved before named
worlds get one world per modality that had its own weights or a fixed camera, named after the modality
(`astra_model.formats`).

A chunk's commands come from one world; a call without commands runs on the shared weights.

Separate worlds (ours, `WorldConfig.own_weights`): by default the worlds share the trained weights too
(self-attention, ACT-Adapters, history embedders, MoAE and the extensions' modules that read its
features), so training one world moves the others: an arm trained alone at its partings forgets how a
mobile robot's view turns. A world with its own weights runs the same frozen blocks with its own
`TrainedWeights`, which start as a copy of the shared ones; its batches then train only its copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from .config import SHARED_WORLD as SHARED_WORLD  # the world of the modalities no world names
from .config import AstraConfig, WorldConfig
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

    def copy(self, extensions: WorldExtensions) -> TrainedWeights:
        """An independent copy with `extensions` (the MoAE keeps referring to the same `AstraConfig`), which
        start as these weights' extensions where they have the same module, and as initialised elsewhere."""
        config = self.moae.config
        parts = (self.attn1, self.adapters, self.history_embedder, self.moae)
        extensions.load_state_dict(self.extensions.state_dict(), strict=False)
        return TrainedWeights(*copy.deepcopy(parts, memo={id(config): config}), extensions)


def worlds_on(weights: str | None, config: AstraConfig) -> list[str]:
    """The worlds that run on `weights`: a world with its own weights, or None for the shared ones."""
    if weights is not None:
        return [weights]
    return [name for name, world in config.all_worlds.items() if not world.own_weights]


def world_modalities(config: AstraConfig) -> dict[str, tuple[str, ...]]:
    """Each world the model simulates -> the modalities that command it."""
    return {name: tuple(world.modalities) for name, world in config.all_worlds.items()}


def world_of_modality(modality: str, config: AstraConfig) -> str:
    """The world a modality commands."""
    if modality not in config.modalities:
        raise ValueError(f"unknown modality {modality!r}; the model has {sorted(config.modalities)}")
    return next(name for name, modalities in world_modalities(config).items() if modality in modalities)


def world_of(actions: Iterable[str] | None, config: AstraConfig) -> str | None:
    """The world a call's `actions` (modality -> anything, or None; the names decide) command; None without
    actions. Raises ValueError when they command several worlds: a chunk is drawn in one."""
    worlds = {name: world_of_modality(name, config) for name in actions or {}}
    if len(set(worlds.values())) > 1:
        raise ValueError(
            f"the actions command several worlds ({', '.join(f'{m} -> {w}' for m, w in worlds.items())}): "
            "a chunk's actions must come from one world"
        )
    return next(iter(worlds.values()), None)


def separate_world_of(actions: Iterable[str] | None, config: AstraConfig) -> str | None:
    """The world whose own weights a call with `actions` runs on (`WorldConfig.own_weights`); None for the
    shared weights."""
    world = world_of(actions, config)
    return world if world is not None and config.all_worlds[world].own_weights else None


def guidance_scale_of(actions: Iterable[str] | None, config: AstraConfig) -> float:
    """The model's AFG scale for a call's `actions` (modality -> anything; the names decide): that of the
    world they command, else `config.sampler.guidance_scale`."""
    world = world_of(actions, config)
    scale = None if world is None else config.all_worlds[world].guidance_scale
    return float(config.sampler.guidance_scale if scale is None else scale)


def fixed_camera_of(actions: Iterable[str] | None, config: AstraConfig) -> WorldConfig | None:
    """The world a call's `actions` command when a fixed camera sees it, else None."""
    world = world_of(actions, config)
    return config.all_worlds[world] if world is not None and config.all_worlds[world].fixed_camera else None
