"""The Gymnasium environments over a tiny random model: Gymnasium's own checker, what a step means,
goal rewards, and the vector environment against single ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config
from gymnasium.utils.env_checker import check_env
from scipy.spatial.transform import Rotation

from astra_model import AstraWorldModel
from astra_model.gym_env import VectorWorldModelEnv, WorldModelEnv, chunk_commands

SIZE = 32
LOW = [-0.5, 0.0, 0.0, 0.0, 0.0, -1.5]
HIGH = [1.0, 0.0, 0.0, 0.0, 0.0, 1.5]
SAMPLER = {"steps": 2}


@pytest.fixture(scope="module")
def model() -> AstraWorldModel:
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config()).eval()
    randomise_action_path(model)
    return model


def seed_source(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Five random frames and the twists that made them, drawn from the environment's generator."""
    frames = rng.integers(0, 255, (5, SIZE, SIZE, 3), dtype=np.uint8)
    return frames, np.tile(np.array([0.3, 0, 0, 0, 0, 0.2], np.float32), (5, 1))


def env(model: AstraWorldModel, **kwargs) -> WorldModelEnv:
    return WorldModelEnv(model, "twist", LOW, HIGH, seed_source, max_episode_steps=3, sampler=SAMPLER, **kwargs)


def test_gymnasiums_checker_passes(model: AstraWorldModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice on symmetric action spaces and render fps: not errors
        check_env(env(model), skip_render_check=False)


def test_a_step_is_one_chunk_whose_last_frame_is_the_observation(model: AstraWorldModel) -> None:
    world = env(model)
    obs, _ = world.reset(seed=3)
    assert obs.shape == (SIZE, SIZE, 3) and obs.dtype == np.uint8
    action = np.array([0.5, 0, 0, 0, 0, 1.0], np.float32)
    obs, reward, terminated, truncated, info = world.step(action)
    assert info["frames"].shape == (8, SIZE, SIZE, 3) and np.array_equal(obs, info["frames"][-1])
    np.testing.assert_array_equal(info["commands"], np.tile(action, (8, 1)))  # a twist is held
    assert (reward, terminated, truncated) == (0.0, False, False)
    # No latency: the observation after a step is drawn from that step's action.
    world.reset(seed=3)
    other, *_ = world.step(np.array([-0.5, 0, 0, 0, 0, -1.0], np.float32))
    assert not np.array_equal(obs, other)
    world.step(action)
    assert world.step(action)[3], "truncated after max_episode_steps"


def test_reset_takes_seed_frames_and_their_commands(model: AstraWorldModel) -> None:
    world = env(model)
    frames = np.full((5, SIZE, SIZE, 3), 9, np.uint8)
    obs, _ = world.reset(seed=0, options={"frames": frames, "commands": np.zeros((5, 6), np.float32)})
    assert np.array_equal(obs, frames[-1])
    with pytest.raises(ValueError, match="seed frames are"):
        world.reset(options={"frames": np.zeros((5, 16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match="outside the action space"):
        world.step(np.array([5.0, 0, 0, 0, 0, 0], np.float32))


def test_a_goal_gives_the_negative_latent_distance_and_ends_the_episode(model: AstraWorldModel) -> None:
    goal = np.random.default_rng(7).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    world = env(model, goal=goal, goal_tolerance=1e9)
    world.reset(seed=1)
    _, reward, terminated, _, info = world.step(np.zeros(6, np.float32))
    assert reward == -info["goal_distance"] < 0 and terminated


def test_targets_ramp_from_the_command_in_force() -> None:
    ramp = chunk_commands(np.array([1.0, 2.0]), np.array([0.0, 0.0]), 4, ramp=True, pose=False)
    np.testing.assert_allclose(ramp, [[0.25, 0.5], [0.5, 1.0], [0.75, 1.5], [1.0, 2.0]])
    quarter = Rotation.from_euler("z", 0.4).as_quat()
    poses = chunk_commands(np.array([0, 0, 0, *quarter]), np.array([0, 0, 0, 0, 0, 0, 1.0]), 4, ramp=True, pose=True)
    np.testing.assert_allclose(Rotation.from_quat(poses[:, 3:]).as_euler("xyz")[:, 2], [0.1, 0.2, 0.3, 0.4], atol=1e-6)
    held = chunk_commands(np.array([1.0, 2.0]), None, 3, ramp=True, pose=False)
    np.testing.assert_array_equal(held, np.tile([1.0, 2.0], (3, 1)))


def test_the_vector_env_equals_single_envs_with_the_same_seeds(model: AstraWorldModel) -> None:
    vector = VectorWorldModelEnv(3, model, "twist", LOW, HIGH, seed_source, max_episode_steps=3, sampler=SAMPLER)
    actions = np.random.default_rng(0).uniform(LOW, HIGH, (2, 3, 6)).astype(np.float32)
    obs, _ = vector.reset(seed=[11, 12, 13])
    batched = [obs]
    for step in actions:
        batched.append(vector.step(step)[0])
    for i, seed in enumerate((11, 12, 13)):
        single = env(model)
        alone = [single.reset(seed=seed)[0]]
        alone += [single.step(step[i])[0] for step in actions]
        for b, a in zip(batched, alone, strict=True):
            assert np.abs(b[i].astype(int) - a.astype(int)).max() <= 1


def test_a_partial_reset_steps_the_groups_that_line_up(model: AstraWorldModel) -> None:
    vector = VectorWorldModelEnv(3, model, "twist", LOW, HIGH, seed_source, max_episode_steps=3, sampler=SAMPLER)
    vector.reset(seed=[1, 2, 3])
    action = np.zeros((3, 6), np.float32)
    vector.step(action)
    assert vector._lined_up() == [[0, 1, 2]]
    vector.reset(seed=[None, 5, None], options={"reset_mask": np.array([False, True, False])})
    assert vector._lined_up() == [[0, 2], [1]], "the reset episode remembers fewer frames"
    obs, *_ = vector.step(action)
    assert obs.shape == (3, SIZE, SIZE, 3)
    single = env(model)
    single.reset(seed=5)
    assert np.abs(obs[1].astype(int) - single.step(action[1])[0].astype(int)).max() <= 1
