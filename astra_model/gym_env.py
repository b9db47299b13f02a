"""Gymnasium environments over the world model: a policy acts, the model draws what it would see.

One `step` is one chunk of the model (`frames_per_step` = F frames, 0.8 s for the demo model at
10 Hz): the policy gives one command, the model generates the chunk those commands produce, and the
observation is the chunk's last frame. The command is a target for the end of the chunk, and the
chunk's per-frame commands go there the way a robot's controller would: a rate command (a twist) is
held for the chunk; an absolute target (joint positions, a camera pose: the modalities the model reads
relative to the command before) is reached by a linear ramp (a slerp for orientations) from the
command in force, so a camera does not jump a chunk's worth of motion in one frame. `chunk_commands`
gives the per-frame commands, so a simulator can execute exactly what the model saw.

Latency: none in steps. The observation after `step(a)` is the first frame drawn after `a`; the
frames in between are in `info["frames"]`. The cost is the control rate: a policy acts once per chunk,
not once per frame.

Reward: with a goal image, the negative latent distance of the observation to the goal
(`astra_model.planner.latent_mse`), and the episode terminates once it is within `goal_tolerance`;
without one, 0. Episodes are truncated after `max_episode_steps`.

`VectorWorldModelEnv` runs N episodes as one batch: each keeps its own noise, so it equals N
`WorldModelEnv`s run with the same seeds (to batch rounding), while sub-environments whose histories
line up (all of them, unless some were reset later than others) share one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from scipy.spatial.transform import Rotation, Slerp

from .model import AstraWorldModel
from .planner import encode_frame, latent_mse
from .rollout import RolloutSession, SessionState

# np_random -> (seed frames uint8 [T, H, W, 3], the commands that made them [T, D] or None)
SeedSource = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def chunk_commands(target: np.ndarray, previous: np.ndarray | None, frames: int, ramp: bool, pose: bool) -> np.ndarray:
    """float32 `[frames, D]` per-frame commands that take a chunk from `previous` to `target`: held
    without `ramp` or a previous command, else a linear ramp ending at `target` (orientations of 7-D
    poses `[x, y, z, qx, qy, qz, qw]` by slerp)."""
    target = np.asarray(target, np.float64)
    if not ramp or previous is None:
        return np.tile(target, (frames, 1)).astype(np.float32)
    previous = np.asarray(previous, np.float64)
    weights = np.arange(1, frames + 1)[:, None] / frames
    out = previous + weights * (target - previous)
    if pose:
        rotations = Rotation.from_quat(np.stack([previous[3:], target[3:]]))
        out[:, 3:] = Slerp([0.0, 1.0], rotations)(weights[:, 0]).as_quat()
    return out.astype(np.float32)


class _Episodes:
    """What the single and vector environments share: spaces, seed frames, commands, goals."""

    def __init__(
        self,
        model: AstraWorldModel,
        modality: str,
        low: Sequence[float],
        high: Sequence[float],
        seed_frames: np.ndarray | SeedSource,
        goal: np.ndarray | None,
        goal_tolerance: float | None,
        max_episode_steps: int,
        sampler: dict[str, Any] | None,
    ) -> None:
        config = model.config
        if modality not in config.modalities:
            raise ValueError(f"the model has no {modality!r} modality; it has {sorted(config.modalities)}")
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if low.shape != (config.modalities[modality],) or low.shape != high.shape or not (low <= high).all():
            raise ValueError(f"low and high must be [{config.modalities[modality]}] bounds with low <= high")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.model, self.modality, self.sampler = model, modality, dict(sampler or {})
        self.seed_frames, self.goal_tolerance, self.max_episode_steps = seed_frames, goal_tolerance, max_episode_steps
        self.ramp = modality in (*config.relative_poses, *config.extensions.relative_commands)
        self.pose = modality in config.relative_poses
        self.frames_per_step = config.frames_per_chunk
        frame_shape = self._frame_shape()
        self.observation_space = spaces.Box(0, 255, frame_shape, np.uint8)
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        self.goal_latents = None if goal is None else encode_frame(model, np.asarray(goal))

    def _frame_shape(self) -> tuple[int, int, int]:
        if isinstance(self.seed_frames, np.ndarray):
            return tuple(self.seed_frames.shape[-3:])
        if self.model.seed_frame is not None:
            return self.model.seed_frame.shape
        frames, _ = self.seed_frames(np.random.default_rng(0))  # a draw of its own tells the image size
        return tuple(np.asarray(frames).shape[-3:])

    def start(self, rng: np.random.Generator, options: dict[str, Any] | None) -> tuple[SessionState, np.ndarray, Any]:
        """A new episode's state (one branch), its first observation and the command in force."""
        options = options or {}
        if "frames" in options:
            frames, commands = np.asarray(options["frames"]), options.get("commands")
        elif callable(self.seed_frames):
            frames, commands = self.seed_frames(rng)
        else:
            frames, commands = self.seed_frames, None
        frames = frames if frames.ndim == 4 else frames[None]
        if frames.shape[1:] != self.observation_space.shape:
            raise ValueError(
                f"seed frames are {frames.shape[1:]}, this environment's are {self.observation_space.shape}"
            )
        seed = int(rng.integers(0, 2**31 - 1))
        given = None if commands is None else {self.modality: np.asarray(commands, np.float32)}
        state = self.model.start(frames, seed=seed, commands=given).snapshot()
        last = None if commands is None else np.asarray(commands, np.float32)[-1]
        return state, frames[-1], last

    def scored(self, frame: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        """(reward, terminated, info) of an observation."""
        if self.goal_latents is None:
            return 0.0, False, {}
        distance = float(latent_mse(encode_frame(self.model, frame), self.goal_latents)[0])
        done = self.goal_tolerance is not None and distance <= self.goal_tolerance
        return -distance, done, {"goal_distance": distance}


class WorldModelEnv(gym.Env):
    """One episode at a time in the world model; see the module docstring.

    Args:
        model: the world model.
        modality: the command modality the policy gives (e.g. "twist").
        low, high: `[D]` the modality's command limits (the action space).
        seed_frames: uint8 `[T, H, W, 3]` frames every episode starts from, or a callable drawing
            (frames, the commands that made them or None) from the environment's random generator.
            `reset(options={"frames": ..., "commands": ...})` overrides it for one episode.
        goal: optional uint8 `[H, W, 3]` goal image for the reward.
        goal_tolerance: the latent distance at which an episode with a goal terminates (None: never).
        max_episode_steps: steps (chunks) before truncation.
        sampler: keyword arguments of `RolloutSession.step` (steps, guidance_scale).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        model: AstraWorldModel,
        modality: str,
        low: Sequence[float],
        high: Sequence[float],
        seed_frames: np.ndarray | SeedSource,
        goal: np.ndarray | None = None,
        goal_tolerance: float | None = None,
        max_episode_steps: int = 12,
        sampler: dict[str, Any] | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        self.episodes = _Episodes(
            model, modality, low, high, seed_frames, goal, goal_tolerance, max_episode_steps, sampler
        )
        self.observation_space = self.episodes.observation_space
        self.action_space = self.episodes.action_space
        self.render_mode = render_mode
        self.session: RolloutSession | None = None
        self._frame: np.ndarray | None = None
        self._command: np.ndarray | None = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        state, self._frame, self._command = self.episodes.start(self.np_random, options)
        self.session = RolloutSession(self.episodes.model, state, 1)
        self._steps = 0
        return self._frame.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        episodes = self.episodes
        action = np.asarray(action, np.float32)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action.tolist()} is outside the action space {self.action_space}")
        commands = chunk_commands(action, self._command, episodes.frames_per_step, episodes.ramp, episodes.pose)
        frames = self.session.step({episodes.modality: commands}, **episodes.sampler)
        self._frame, self._command, self._steps = frames[-1], commands[-1], self._steps + 1
        reward, terminated, info = episodes.scored(self._frame)
        truncated = self._steps >= episodes.max_episode_steps
        return self._frame.copy(), reward, terminated, truncated, {**info, "frames": frames, "commands": commands}

    def render(self) -> np.ndarray | None:
        return None if self._frame is None else self._frame.copy()


class VectorWorldModelEnv(VectorEnv):
    """`num_envs` episodes in the world model, stepped as one batch; see the module docstring.

    Each sub-environment keeps its own random generators, so sub-environment i equals a `WorldModelEnv`
    reset with the same seed. Episodes are not reset automatically (`AutoresetMode.DISABLED`): reset
    finished ones with `reset(options={"reset_mask": mask})`. The arguments are `WorldModelEnv`'s.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(
        self,
        num_envs: int,
        model: AstraWorldModel,
        modality: str,
        low: Sequence[float],
        high: Sequence[float],
        seed_frames: np.ndarray | SeedSource,
        goal: np.ndarray | None = None,
        goal_tolerance: float | None = None,
        max_episode_steps: int = 12,
        sampler: dict[str, Any] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.episodes = _Episodes(
            model, modality, low, high, seed_frames, goal, goal_tolerance, max_episode_steps, sampler
        )
        self.num_envs = num_envs
        self.single_observation_space = self.episodes.observation_space
        self.single_action_space = self.episodes.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._states: list[SessionState | None] = [None] * num_envs
        self._noise: list[torch.Generator] = [torch.Generator() for _ in range(num_envs)]
        self._frames = np.zeros((num_envs, *self.single_observation_space.shape), np.uint8)
        self._commands: list[np.ndarray | None] = [None] * num_envs
        self._steps = np.zeros(num_envs, int)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = (
            seed if isinstance(seed, Sequence) else [None if seed is None else seed + i for i in range(self.num_envs)]
        )
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, bool)))
        if len(seeds) != self.num_envs or mask.shape != (self.num_envs,):
            raise ValueError(f"give {self.num_envs} seeds and a reset_mask of {self.num_envs}")
        for i in np.flatnonzero(mask):
            rng, _ = gym.utils.seeding.np_random(seeds[i])
            state, self._frames[i], self._commands[i] = self.episodes.start(rng, options)
            self._states[i] = state
            self._noise[i].set_state(state.rng_state)  # the noise a WorldModelEnv with this seed draws
            self._steps[i] = 0
        return self._frames.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if any(state is None for state in self._states):
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, np.float32)
        if not self.action_space.contains(actions):
            raise ValueError(f"actions outside the action space {self.action_space}")
        episodes = self.episodes
        commands = np.stack(
            [
                chunk_commands(a, c, episodes.frames_per_step, episodes.ramp, episodes.pose)
                for a, c in zip(actions, self._commands, strict=True)
            ]
        )
        frames = np.zeros((self.num_envs, episodes.frames_per_step, *self.single_observation_space.shape), np.uint8)
        for group in self._lined_up():
            frames[group] = self._step_group(group, commands[group])
        self._frames = frames[:, -1].copy()
        self._commands = list(commands[:, -1])
        self._steps += 1
        scored = [episodes.scored(frame) for frame in self._frames]
        rewards = np.array([r for r, _, _ in scored], np.float64)
        terminated = np.array([t for _, t, _ in scored])
        truncated = self._steps >= episodes.max_episode_steps
        info = {"frames": frames, "commands": commands}
        if episodes.goal_latents is not None:
            info["goal_distance"] = np.array([i["goal_distance"] for _, _, i in scored])
        return self._frames.copy(), rewards, terminated, truncated, info

    def _lined_up(self) -> list[list[int]]:
        """Sub-environments grouped so that each group's states can step as one batch."""
        groups: list[list[int]] = []
        for i, state in enumerate(self._states):
            group = next((g for g in groups if self._states[g[0]].lines_up_with(state)), None)
            if group is None:
                groups.append([i])
            else:
                group.append(i)
        return groups

    def _step_group(self, group: list[int], commands: np.ndarray) -> np.ndarray:
        episodes = self.episodes
        session = RolloutSession(episodes.model, SessionState.stack([self._states[i] for i in group]), len(group))
        h, w = session.state.history.latents.shape[-2:]
        shape = (1, episodes.model.config.latent_channels, episodes.model.config.chunk_latent_frames, h, w)
        noise = torch.cat([torch.randn(shape, generator=self._noise[i]) for i in group])
        frames = session.step({episodes.modality: commands}, noise=noise, **episodes.sampler)
        for k, i in enumerate(group):
            self._states[i] = session.state.branch(k)
        return frames.reshape(len(group), *frames.shape[-4:])
