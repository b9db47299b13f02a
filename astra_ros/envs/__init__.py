"""Small MuJoCo worlds that generate action-conditioned video for training Astra, one per action type.

    from astra_ros.envs import make_env

    with make_env("mobile", seed=0, image_size=64) as env:
        frames = [env.reset()]
        for action in env.sample_actions(40, np.random.default_rng(0)):
            frames.append(env.step(action))

Domains (all at `frame_rate` = 10 Hz; each `step` simulates 0.1 s):

- ``"mobile"`` (modality ``"twist"``, 6-D geometry_msgs/Twist): a differential-drive robot's
  onboard camera in a landmark arena; only linear.x (m/s) and angular.z (rad/s) act.
- ``"arm"`` (modality ``"joints"``, 4-D sensor_msgs/JointState positions in rad): a 4-joint arm on a
  table with objects, seen by a fixed camera; the targets are tracked by position servos.
- ``"camera"`` (modality ``"camera_pose"``, 7-D geometry_msgs/PoseStamped [x, y, z, qx, qy, qz, qw]):
  a free camera moved to the given absolute pose in a furnished room.

Rendering is CPU-only through OSMesa: ``MUJOCO_GL`` defaults to ``osmesa`` (set here before MuJoCo is
imported; an explicit ``MUJOCO_GL`` wins) and needs Debian's ``libosmesa6``
(``scripts/system_deps.sh``). Nothing here imports rclpy or torch.
"""

from __future__ import annotations

# _base sets MUJOCO_GL (default "osmesa") before MuJoCo is first imported, so it must come first.
from ._base import MujocoEnv  # isort: skip
from .arm import ArmEnv
from .camera import CameraEnv
from .mobile import MobileEnv

ENV_CLASSES: dict[str, type[MujocoEnv]] = {"mobile": MobileEnv, "arm": ArmEnv, "camera": CameraEnv}
DOMAINS: tuple[str, ...] = tuple(ENV_CLASSES)


def make_env(domain: str, seed: int = 0, image_size: int | tuple[int, int] = 64) -> MujocoEnv:
    """Build the world for `domain` ("mobile", "arm" or "camera").

    `seed` seeds the env's RNG used by `reset()`; `image_size` is an int (square) or (height, width).
    """
    cls = ENV_CLASSES.get(domain) if isinstance(domain, str) else None
    if cls is None:
        raise ValueError(f"unknown env domain {domain!r}; valid domains are: {', '.join(DOMAINS)}")
    return cls(seed=seed, image_size=image_size)


__all__ = ["DOMAINS", "ENV_CLASSES", "ArmEnv", "CameraEnv", "MobileEnv", "MujocoEnv", "make_env"]
