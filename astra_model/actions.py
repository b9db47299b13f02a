"""Validation and per-latent-frame grouping of action inputs.

Users give actions per video frame. The Wan VAE folds `temporal_ratio` (4) video frames into one latent
frame, so each latent frame of a generated chunk gets one action vector built from its 4 frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import AstraConfig
from .poses import relative_to_previous
from .relative_commands import read_relative


def validate_actions(
    actions: Mapping[str, torch.Tensor], config: AstraConfig, num_latent_frames: int, read: bool = False
) -> None:
    """Raise ValueError for unknown modalities, wrong shapes or non-finite values.

    Each value must be `[B, num_latent_frames * temporal_ratio, dim]`, with `dim` the modality's width as
    commanded, or as the model reads it (`read`, see `as_model_reads`).
    """
    expected_frames = num_latent_frames * config.temporal_ratio
    for name, value in actions.items():
        if name not in config.modalities:
            raise ValueError(f"unknown action modality {name!r}; this model knows {sorted(config.modalities)}")
        dim = config.read_dim(name) if read else config.modalities[name]
        if value.ndim != 3 or value.shape[1] != expected_frames or value.shape[2] != dim:
            raise ValueError(
                f"actions[{name!r}] must be [batch, {expected_frames}, {dim}] "
                f"({num_latent_frames} latent frames x {config.temporal_ratio} video frames), got {list(value.shape)}"
            )
        if not torch.isfinite(value).all():
            bad = (~torch.isfinite(value)).nonzero()[0].tolist()
            raise ValueError(f"actions[{name!r}] contains NaN or infinite values (first at index {bad})")


def group_per_latent_frame(value: torch.Tensor, config: AstraConfig) -> torch.Tensor:
    """`[B, F * ratio, D]` video-frame actions -> `[B, F, ratio * D]` (stack) or `[B, F, D]` (mean)."""
    b, n, d = value.shape
    grouped = value.reshape(b, n // config.temporal_ratio, config.temporal_ratio, d)
    if config.action_grouping == "mean":
        return grouped.mean(dim=2)
    return grouped.flatten(2)


def latent_frame_commands(per_frame: torch.Tensor, config: AstraConfig) -> torch.Tensor:
    """`[1 + ratio * (T - 1), D]` commands that produced T latent frames' video frames -> `[T, A]` grouped
    per latent frame, zeros for latent frame 0: nothing the model generates follows a frame-0 command."""
    grouped = group_per_latent_frame(per_frame[None, 1:], config)[0]
    return torch.cat([grouped.new_zeros(1, grouped.shape[1]), grouped])


def as_model_reads(
    actions: Mapping[str, torch.Tensor], config: AstraConfig, previous: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Commands `[B, N, D]` as the model reads them: `config.relative_poses` modalities become each
    frame's pose relative to the one before, `config.extensions.relative_commands` modalities each frame's
    change since the command before, and maybe the command beside it (`astra_model.relative_commands`);
    the rest are unchanged. `previous[name]` `[B, D]` is the command before the first, if known."""
    out = dict(actions)
    before = previous or {}
    for name in config.relative_poses:
        if name in out:
            last = before.get(name)
            try:
                rel = relative_to_previous(out[name].cpu().numpy(), None if last is None else last.cpu().numpy())
            except ValueError as err:
                raise ValueError(f"actions[{name!r}]: {err}") from err
            out[name] = torch.from_numpy(rel).to(out[name])
    for name, reading in config.extensions.relative_commands.items():
        if name in out:
            out[name] = read_relative(out[name], before.get(name), reading == "change_and_target")
    return out


def last_commands(commands: Mapping[str, torch.Tensor], config: AstraConfig) -> dict[str, torch.Tensor]:
    """The latest `[B, D]` command of each modality the model reads relative to the one before."""
    relative = {*config.relative_poses, *config.extensions.relative_commands}
    return {k: v[:, -1] for k, v in commands.items() if k in relative}
