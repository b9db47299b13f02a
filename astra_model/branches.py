"""Counterfactual rollouts of many command plans from one session state, in bounded micro-batches.

Every plan continues the same `SessionState` and draws the same noise (common random numbers), so
plans differ only by their commands. Plans are rolled out `max_batch` at a time, each micro-batch from a
fresh copy of the state: the generator of every micro-batch restarts from the same random state, so
splitting a batch changes nothing but peak memory, which grows with `max_batch` and not with the
number of plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .model import AstraWorldModel
from .pieces import Pieces
from .rollout import RolloutSession, SessionState


def branch_rollouts(
    model: AstraWorldModel,
    state: SessionState,
    plans: Mapping[str, np.ndarray],
    max_batch: int,
    settings: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
    decode: bool = True,
) -> Pieces[np.ndarray | torch.Tensor]:
    """Roll every plan forward from `state`, in pieces (`astra_model.pieces`): one per denoising step and
    decoded latent frame of each chunk of each micro-batch.

    Args:
        model: the world model `state` belongs to.
        state: where every plan starts (a `RolloutSession.snapshot()` of one branch); not changed.
        plans: modality -> per-frame commands `[n, T, D]` with `T` a multiple of the chunk's frames;
            every modality gives all `n` plans.
        max_batch: plans rolled out together at most.
        settings: keyword arguments of `RolloutSession.step` (guidance_scale, steps).
        keep_last: keep only each plan's last `keep_last` frames, or latent frames without `decode`
            (memory stays bounded by `max_batch` chunks); None keeps every frame.
        decode: False skips the VAE and returns latents (what a planner scores).

    Returns:
        uint8 frames `[n, T, H, W, 3]`, or latents `[n, C, T, h, w]` without `decode`; with `keep_last`
        only the last frames, `[n, keep_last, H, W, 3]` or `[n, C, keep_last, h, w]`.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    if state.history.latents.shape[0] != 1:
        raise ValueError("branch_rollouts starts from the state of one branch")
    count, frames = _plan_shape(plans)
    per_chunk = model.config.frames_per_chunk
    if frames % per_chunk:
        raise ValueError(f"plans must span a multiple of {per_chunk} frames, got {frames}")
    out = []
    for first in range(0, count, max_batch):
        batch = min(max_batch, count - first)
        session = RolloutSession(model, state.copy(repeat=batch), batch)
        kept = []
        for start in range(0, frames, per_chunk):
            chunk = {name: value[first : first + batch, start : start + per_chunk] for name, value in plans.items()}
            out_chunk = yield from session.stepping(chunk, decode=decode, **(settings or {}))
            if decode:  # frames [B, F, H, W, 3] (a batch of one comes back unbatched), else latents [B, C, F, h, w]
                out_chunk = out_chunk.reshape(batch, per_chunk, *out_chunk.shape[-3:])
            kept = [_frames([*kept, out_chunk], decode, keep_last)]
        out.append(kept[0])
    return np.concatenate(out) if decode else torch.cat(out)


def _frames(parts: list, decode: bool, keep_last: int | None) -> np.ndarray | torch.Tensor:
    """Frames `[B, F, ...]` or latents `[B, C, F, ...]` joined along F, then the last `keep_last` kept."""
    joined = np.concatenate(parts, axis=1) if decode else torch.cat(parts, dim=2)
    if keep_last is None:
        return joined
    return joined[:, -keep_last:] if decode else joined[:, :, -keep_last:]


def _plan_shape(plans: Mapping[str, np.ndarray]) -> tuple[int, int]:
    shapes = {np.shape(value)[:2] for value in plans.values()}
    if not plans or len(shapes) != 1 or any(np.ndim(value) != 3 for value in plans.values()):
        raise ValueError(f"plans must be modality -> [n, T, D] with one n and T, got {shapes or 'none'}")
    count, frames = shapes.pop()
    if count < 1 or frames < 1:
        raise ValueError(f"plans must hold at least one plan of at least one frame, got [{count}, {frames}]")
    return count, frames
