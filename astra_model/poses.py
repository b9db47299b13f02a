"""Camera poses as Astra reads them: each frame's pose relative to the frame before.

Robots command absolute poses (`geometry_msgs/PoseStamped` in a world frame). What a camera sees next
depends only on how it moves from where it is, so the model reads the motion between consecutive
frames, as the paper's relative camera poses do. Sessions and training clips convert with
`relative_to_previous`; the model's forward pass takes the converted poses.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

POSE_DIM = 7  # [x, y, z, qx, qy, qz, qw]


def relative_to_previous(poses: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Each pose in the frame of the pose before it.

    Args:
        poses: `[..., N, 7]` absolute poses `[x, y, z, qx, qy, qz, qw]` (quaternions need not be unit).
        previous: `[..., 7]` the pose before `poses[..., 0, :]`; None treats the first pose as having
            not moved (its relative pose is the identity).

    Returns:
        float32 `[..., N, 7]`: row k is `pose[k-1]^-1 * pose[k]`, quaternion with `qw >= 0`, so no
        motion is exactly `[0, 0, 0, 0, 0, 0, 1]`.
    """
    cur = np.asarray(poses, dtype=np.float64)
    if cur.shape[-1] != POSE_DIM or cur.ndim < 2:
        raise ValueError(f"poses must be [..., N, {POSE_DIM}] [x, y, z, qx, qy, qz, qw], got {list(cur.shape)}")
    first = cur[..., :1, :] if previous is None else np.asarray(previous, dtype=np.float64)[..., None, :]
    before = np.concatenate([first, cur[..., :-1, :]], axis=-2)
    flat_before, flat_cur = before.reshape(-1, POSE_DIM), cur.reshape(-1, POSE_DIM)
    for name, flat in (("poses", flat_cur), ("previous", flat_before)):
        if not (np.linalg.norm(flat[:, 3:], axis=-1) > 0).all():
            raise ValueError(f"{name} has a zero-norm quaternion: not a pose")
    inv = Rotation.from_quat(flat_before[:, 3:]).inv()
    translation = inv.apply(flat_cur[:, :3] - flat_before[:, :3])
    rotation = (inv * Rotation.from_quat(flat_cur[:, 3:])).as_quat(canonical=True)
    return np.concatenate([translation, rotation], axis=-1).reshape(cur.shape).astype(np.float32)
