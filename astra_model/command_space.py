"""What a planner searches over: per-frame parameters within bounds, and how they become commands.

A planner samples parameters `[N, T, P]` inside a box and hands the model commands `[N, T, D]`. The box
is the world's documented command limits, in one of three forms:

- `absolute`: the parameters are the commands (a mobile robot's twist: speed and yaw-rate limits).
- `increments`: each frame's command is the one before plus a bounded step, clipped to the absolute
  limits (joint position targets: a step is a speed limit times the frame period). Sampling targets
  directly would throw the arm across its range every frame.
- `pose_increments`: each frame's pose is the one before moved by a bounded translation and rotation
  `[dx, dy, dz, rx, ry, rz]` (metres and a rotation vector, in the camera's own frame), then clipped to
  the position limits; a box over quaternion components is no box over orientations.

Where a box has zero width (a twist's unused linear.y), that parameter is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# (parameters [N, T, P], command before the plan [D] or None) -> commands [N, T, D]
ToCommands = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class CommandSpace:
    """Bounds of a plan's per-frame parameters and the map to the modality's commands.

    Attributes:
        low, high: `[P]` bounds of one frame's parameters.
        to_commands: parameters `[N, T, P]` and the command in force before the plan `[D]` -> commands.
        needs_current: `to_commands` starts from the command in force (increments); a plan then needs it.
    """

    low: np.ndarray
    high: np.ndarray
    to_commands: ToCommands
    needs_current: bool = False

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if low.shape != high.shape or low.ndim != 1 or not (low <= high).all() or not np.isfinite(low + high).all():
            raise ValueError(f"CommandSpace bounds must be finite [P] arrays with low <= high, got {low} and {high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def size(self) -> int:
        return len(self.low)

    def commands(self, params: np.ndarray, current: np.ndarray | None = None) -> np.ndarray:
        """float32 commands `[N, T, D]` for parameters `[N, T, P]` (clipped to the bounds first)."""
        if self.needs_current and current is None:
            raise ValueError("this command space moves from the command in force: give current")
        clipped = np.clip(np.asarray(params, np.float64), self.low, self.high)
        return self.to_commands(clipped, None if current is None else np.asarray(current, np.float64)).astype(
            np.float32
        )


def absolute(low: np.ndarray, high: np.ndarray) -> CommandSpace:
    """The parameters are the commands, within `[low, high]`."""
    return CommandSpace(np.asarray(low), np.asarray(high), lambda params, _current: params)


def increments(step: np.ndarray, low: np.ndarray, high: np.ndarray) -> CommandSpace:
    """Each frame's command moves from the one before by at most `step` per element, within `[low, high]`."""
    step, low, high = (np.asarray(v, np.float64) for v in (step, low, high))

    def to_commands(params: np.ndarray, current: np.ndarray | None) -> np.ndarray:
        out = np.empty_like(params)
        before = np.broadcast_to(np.clip(current, low, high), params[:, 0].shape)
        for t in range(params.shape[1]):  # clip as we go: a saturated joint does not store up motion
            before = out[:, t] = np.clip(before + params[:, t], low, high)
        return out

    return CommandSpace(-step, step, to_commands, needs_current=True)


def pose_increments(
    max_translation: np.ndarray, max_rotation: np.ndarray, position_low: np.ndarray, position_high: np.ndarray
) -> CommandSpace:
    """Poses `[x, y, z, qx, qy, qz, qw]` moved each frame by at most `max_translation` (m, per axis of
    the camera's frame) and `max_rotation` (rad, rotation-vector components), positions clipped."""
    bound = np.concatenate([max_translation, max_rotation]).astype(np.float64)
    position_low, position_high = np.asarray(position_low, np.float64), np.asarray(position_high, np.float64)

    def to_commands(params: np.ndarray, current: np.ndarray | None) -> np.ndarray:
        n, frames, _ = params.shape
        position = np.broadcast_to(current[:3], (n, 3)).copy()
        rotation = Rotation.from_quat(np.broadcast_to(current[3:], (n, 4)))
        out = np.empty((n, frames, 7))
        for t in range(frames):
            position = np.clip(position + rotation.apply(params[:, t, :3]), position_low, position_high)
            rotation = rotation * Rotation.from_rotvec(params[:, t, 3:])
            out[:, t] = np.concatenate([position, rotation.as_quat()], axis=-1)
        return out

    return CommandSpace(-bound, bound, to_commands, needs_current=True)
