"""Relative commands and targets (ours, `extensions.relative_commands`): absolute commands, such as joint
position targets, read as each frame's change since the command before, and optionally the target beside
it.

A fixed camera sees a small mover, and where it goes next is how its command changes, not the command
itself; the model reads it as it reads camera poses under `relative_poses`. The change tells two futures
from one state apart, and the target says where the mover ends up, so the model need not read its pose
from the pixels. A session's first change is taken against the command before it when known, else it is
zero (`astra_model.actions.as_model_reads`).
"""

from __future__ import annotations

import torch


def read_relative(value: torch.Tensor, previous: torch.Tensor | None, with_target: bool) -> torch.Tensor:
    """Commands `[B, N, D]` as the model reads them: each frame's change since the command before
    (`previous` `[B, D]` before the first, if known; else the first reads as no change), followed by the
    command itself when `with_target` (`[B, N, 2D]`)."""
    first = value[:, :1] if previous is None else previous.to(value)[:, None]
    change = value - torch.cat([first, value[:, :-1]], dim=1)
    return torch.cat([change, value], dim=-1) if with_target else change


def encoder_with_targets(weight: torch.Tensor, per_frame: int, frames: int) -> torch.Tensor:
    """A modality encoder's weight `[U, frames * per_frame + 1]`, trained on commands read as changes,
    widened to read `[change, target]` per frame: `[U, frames * 2 per_frame + 1]` (`frames`:
    `config.stacked_frames`). The target columns start at zero, so the widened encoder computes what the
    trained one did."""
    if weight.shape[1] != frames * per_frame + 1:
        raise ValueError(f"encoder weight {list(weight.shape)} does not read {frames} x {per_frame} commands + flag")
    change = weight[:, :-1].unflatten(1, (frames, per_frame))
    wide = torch.cat([change, torch.zeros_like(change)], dim=2).flatten(1)
    return torch.cat([wide, weight[:, -1:]], dim=1)
