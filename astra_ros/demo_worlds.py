"""The demo worlds as a planner sees them: what it may command, and how close counts as there.

`command_space(domain)` turns each world's documented command limits into the space a planner searches
(`astra_model.command_space`). `goal_error(domain, env, goal)` measures, in physical units, how far the
world's true state is from a goal state, and `TOLERANCES` says when that counts as reached:

- mobile: position within 0.15 m and heading within 15 degrees;
- arm: every joint within 0.35 rad (20 degrees);
- camera: viewing orientation within 25 degrees.

The planning benchmark's goals lie 16 frames of a world's own commands from the start
(`astra_ros.plan_eval`). On its seeds 95000-95099 that moves the mobile robot a median 0.38 m and turns
it 41 degrees, moves the arm's furthest joint a median 0.94 rad, and turns the camera a median 67
degrees (the start-to-goal distance of each episode, measured with `goal_error`). Each tolerance is
about 40% of that median: a controller within it has closed most of the distance, while a goal that
happens to lie close to the start still counts for holding still, which the `hold` controller's
success rate shows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from astra_model.command_space import CommandSpace, absolute, increments, pose_increments

from .envs import DOMAINS, MujocoEnv
from .envs.arm import MAX_SPEED, ArmEnv
from .envs.camera import POS_HIGH, POS_LOW, CameraEnv
from .envs.mobile import MobileEnv

# domain -> {component: tolerance}; errors are measured in the same units.
TOLERANCES: dict[str, dict[str, float]] = {
    "mobile": {"position_m": 0.15, "heading_rad": math.radians(15)},
    "arm": {"joint_rad": 0.35},
    "camera": {"orientation_rad": math.radians(25)},
}


def command_space(domain: str) -> CommandSpace:
    """What a planner may command in `domain`: the mobile robot's speed and yaw-rate limits; the arm's
    joint limits, moved at most its joint speeds per frame; the camera moved per frame by at most what
    its command generator moves it (0.8 m/s, and 0.3, 0.6, 1.2 rad/s of roll, pitch and yaw at 10 Hz),
    inside the room's position limits."""
    if domain == "mobile":
        return absolute(MobileEnv.action_low, MobileEnv.action_high)
    if domain == "arm":
        return increments(MAX_SPEED / ArmEnv.frame_rate, ArmEnv.action_low, ArmEnv.action_high)
    if domain == "camera":
        per_frame = 1 / CameraEnv.frame_rate
        return pose_increments(np.full(3, 0.8 * per_frame), np.array([0.3, 0.6, 1.2]) * per_frame, POS_LOW, POS_HIGH)
    raise ValueError(f"unknown domain {domain!r}; the demo worlds are {', '.join(DOMAINS)}")


def task_state(env: MujocoEnv) -> np.ndarray:
    """What a goal pins down: the mobile robot's `[x, y, yaw]`, the arm's 4 joint angles, the camera's
    orientation quaternion `[qx, qy, qz, qw]`."""
    if env.domain == "mobile":
        return np.array(env.data.qpos[:3])
    if env.domain == "arm":
        return np.array(env.data.qpos[:4])
    return env.current_pose()[3:]


def goal_error(domain: str, state: np.ndarray, goal: np.ndarray) -> dict[str, float]:
    """Error components of `state` against `goal` (both from `task_state`), in `TOLERANCES` units."""
    if domain == "mobile":
        heading = (state[2] - goal[2] + math.pi) % (2 * math.pi) - math.pi
        return {"position_m": float(np.linalg.norm(state[:2] - goal[:2])), "heading_rad": abs(float(heading))}
    if domain == "arm":
        return {"joint_rad": float(np.abs(state - goal).max())}
    angle = (Rotation.from_quat(state).inv() * Rotation.from_quat(goal)).magnitude()
    return {"orientation_rad": float(angle)}


def error_in_tolerances(domain: str, error: dict[str, Any]) -> float:
    """The largest error component as a multiple of its tolerance: the goal is reached at <= 1."""
    return max(error[name] / tolerance for name, tolerance in TOLERANCES[domain].items())
