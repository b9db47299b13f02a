"""The planner on a tiny random model: it finds a known optimum, micro-batching and seeds change nothing
they should not, and command spaces keep commands inside the world's limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config
from scipy.spatial.transform import Rotation

from astra_model import AstraWorldModel
from astra_model.branches import branch_rollouts
from astra_model.command_space import absolute, increments, pose_increments
from astra_model.pieces import run_to_end
from astra_model.planner import ModelRollouts, Planner, PlannerConfig, encode_frame, latent_mse
from astra_model.rollout import SessionState

SIZE = 32
LOW, HIGH = np.array([-0.5, 0, 0, 0, 0, -1.5]), np.array([1.0, 0, 0, 0, 0, 1.5])


@pytest.fixture(scope="module")
def model() -> AstraWorldModel:
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config()).eval()
    randomise_action_path(model)  # commands change what the model predicts
    return model


@pytest.fixture(scope="module")
def start(model: AstraWorldModel) -> SessionState:
    frames = np.random.default_rng(0).integers(0, 255, (5, SIZE, SIZE, 3), dtype=np.uint8)
    return model.start(frames, seed=3).snapshot()


@pytest.fixture(scope="module")
def goal() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


def settings(**overrides) -> PlannerConfig:
    return PlannerConfig(**{"candidates": 12, "iterations": 2, "elites": 3, "steps": 2, **overrides})


def test_the_planner_finds_a_known_optimum_of_a_synthetic_cost(model: AstraWorldModel, start: SessionState) -> None:
    target = np.array([0.6, 0, 0, 0, 0, -0.8], np.float32)

    def cost(commands: np.ndarray, latents: torch.Tensor, goal_latents: torch.Tensor) -> np.ndarray:
        assert latents.shape[0] == len(commands) and goal_latents.shape[0] == 1
        return ((commands - target) ** 2).mean(axis=(1, 2))

    config = settings(candidates=48, iterations=8, elites=6)
    plan = Planner(model, "twist", absolute(LOW, HIGH), config, cost_fn=cost).plan(
        start, np.zeros((32, 32, 3), np.uint8)
    )
    assert plan.commands.shape == (8, 6) and plan.commands.dtype == np.float32
    np.testing.assert_allclose(plan.commands, np.tile(target, (8, 1)), atol=0.1)
    assert plan.cost < 2e-3 and plan.iterations == 8 and plan.candidates == 8 * 48
    assert plan.mean_costs[-1] < plan.mean_costs[0], "the search did not narrow"


def test_holding_still_is_always_a_candidate(model: AstraWorldModel, start: SessionState) -> None:
    # The first replan drives on; then the goal is reached: staying put costs 0, any motion more.
    # Samples around the warm start rarely stop exactly, yet one iteration must find the zero twist.
    target = [np.float32([0.8, 0, 0, 0, 0, 1.0])]

    def cost(commands: np.ndarray, latents: torch.Tensor, goal_latents: torch.Tensor) -> np.ndarray:
        return np.abs(commands - target[0]).sum(axis=(1, 2))

    planner = Planner(model, "twist", absolute(LOW, HIGH), settings(candidates=24, iterations=4), cost_fn=cost)
    goal = np.zeros((32, 32, 3), np.uint8)
    assert np.abs(planner.plan(start, goal).commands).max() > 0.5
    planner.config.iterations, target[0] = 1, np.zeros(6, np.float32)
    plan = planner.plan(start, goal)
    assert plan.cost == 0.0
    np.testing.assert_array_equal(plan.commands, np.zeros((8, 6), np.float32))


def test_micro_batches_give_the_plan_of_one_batch(model: AstraWorldModel, start: SessionState, goal) -> None:
    plans = [Planner(model, "twist", absolute(LOW, HIGH), settings(max_batch=b)).plan(start, goal) for b in (3, 12)]
    assert np.abs(plans[0].commands).max() > 0, "costs that tell candidates apart pick one that moves"
    np.testing.assert_array_equal(plans[0].commands, plans[1].commands)
    assert plans[0].cost == pytest.approx(plans[1].cost, rel=1e-5)
    np.testing.assert_allclose(plans[0].frames.astype(int), plans[1].frames.astype(int), atol=1)


@pytest.mark.parametrize(("decode", "keep"), [(False, 3), (True, 10)])
def test_branches_keep_their_last_frames_across_chunks(
    model: AstraWorldModel, start: SessionState, decode, keep
) -> None:
    # Two chunks of 8 frames, 2 latent frames each in the tiny model: both counts reach into the first.
    plans = {"twist": np.random.default_rng(2).uniform(LOW, HIGH, (3, 16, 6)).astype(np.float32)}
    settings = {"steps": 2}
    every = run_to_end(branch_rollouts(model, start, plans, 2, settings, None, decode))
    last = run_to_end(branch_rollouts(model, start, plans, 2, settings, keep, decode))
    expected = every[:, -keep:] if decode else every[:, :, -keep:]
    assert tuple(last.shape) == tuple(expected.shape) and last.shape[2 - decode] == keep
    np.testing.assert_array_equal(np.asarray(last), np.asarray(expected))


def test_a_replan_is_deterministic_for_a_seed(model: AstraWorldModel, start: SessionState, goal) -> None:
    def plan(seed: int, planner: Planner | None = None) -> np.ndarray:
        planner = planner or Planner(model, "twist", absolute(LOW, HIGH), settings(seed=seed))
        return planner.plan(start, goal).commands

    np.testing.assert_array_equal(plan(5), plan(5))
    assert not np.array_equal(plan(5), plan(6))
    planner = Planner(model, "twist", absolute(LOW, HIGH), settings(seed=5))
    first = plan(5, planner)
    planner.reset()
    np.testing.assert_array_equal(plan(5, planner), first)


def test_the_plan_comes_with_its_cost_and_predicted_frames(model: AstraWorldModel, start: SessionState, goal) -> None:
    planner = Planner(model, "twist", absolute(LOW, HIGH), settings(horizon_chunks=2))
    plan = planner.plan(start, goal)
    assert plan.commands.shape == (16, 6) and plan.frames.shape == (16, SIZE, SIZE, 3) and plan.frames.dtype == np.uint8
    assert (plan.commands >= LOW - 1e-6).all() and (plan.commands <= HIGH + 1e-6).all()
    # The reported cost is what the model predicts for the returned plan: its last frames' pooled latents.
    config = planner.config
    last = ModelRollouts(model, start, "twist", 1, planner._settings()).last_latents(plan.commands[None], 4)
    assert last.shape[2] == 1 and config.cost_frames == 4, "4 frames: one latent frame in the tiny model"
    expected = latent_mse(last, encode_frame(model, goal), config.cost_pool)[0]
    assert plan.cost == pytest.approx(float(expected), rel=1e-4)
    assert plan.candidate_frames_per_second > 0


def test_a_time_budget_stops_after_one_iteration(model: AstraWorldModel, start: SessionState, goal) -> None:
    plan = Planner(model, "twist", absolute(LOW, HIGH), settings(iterations=5, time_budget_s=1e-3)).plan(start, goal)
    assert plan.iterations == 1


def test_mppi_plans_too(model: AstraWorldModel, start: SessionState, goal) -> None:
    plan = Planner(model, "twist", absolute(LOW, HIGH), settings(method="mppi")).plan(start, goal)
    assert np.isfinite(plan.cost) and plan.iterations == 2


def test_increments_move_from_the_command_in_force_within_limits() -> None:
    space = increments(step=[0.1, 0.2], low=[-1.0, 0.0], high=[1.0, 0.5])
    params = np.tile([[0.1, 0.2]], (1, 5, 1))
    commands = space.commands(params, current=np.array([0.8, 0.1]))
    np.testing.assert_allclose(commands[0, :, 0], [0.9, 1.0, 1.0, 1.0, 1.0], atol=1e-6)  # saturates at 1.0
    np.testing.assert_allclose(commands[0, :, 1], [0.3, 0.5, 0.5, 0.5, 0.5], atol=1e-6)
    back = space.commands(-params, current=np.array([1.0, 0.5]))
    assert back[0, 0, 0] == pytest.approx(0.9), "a saturated joint stores no motion"
    with pytest.raises(ValueError, match="give current"):
        space.commands(params)


def test_pose_increments_turn_and_move_the_camera_in_its_own_frame() -> None:
    space = pose_increments(np.full(3, 0.1), np.full(3, 0.2), [-3, -3, 0], [3, 3, 3])
    yaw_left = np.zeros((1, 4, 6))
    yaw_left[0, :, 0] = 0.1  # forward 0.1 m per frame
    yaw_left[0, :, 5] = 0.2  # and turn left 0.2 rad per frame
    commands = space.commands(yaw_left, current=np.array([0, 0, 1.5, 0, 0, 0, 1.0]))
    assert commands.shape == (1, 4, 7)
    np.testing.assert_allclose(np.linalg.norm(commands[0, :, 3:], axis=-1), 1.0, atol=1e-6)
    yaws = Rotation.from_quat(commands[0, :, 3:]).as_euler("xyz")[:, 2]
    np.testing.assert_allclose(yaws, [0.2, 0.4, 0.6, 0.8], atol=1e-5)
    assert commands[0, 1, 1] > 0, "the second step goes forward along the turned heading (to +y)"


def test_bad_settings_and_goals_are_refused(model: AstraWorldModel, start: SessionState) -> None:
    with pytest.raises(ValueError, match="elites must be in"):
        PlannerConfig(candidates=4, elites=5)
    with pytest.raises(ValueError, match="frames_per_knot must divide"):
        Planner(model, "twist", absolute(LOW, HIGH), PlannerConfig(frames_per_knot=3))
    with pytest.raises(ValueError, match=r"cost_frames \(9\) exceeds the horizon's 8 frames"):
        Planner(model, "twist", absolute(LOW, HIGH), PlannerConfig(cost_frames=9))
    with pytest.raises(ValueError, match="cost_pool must be"):
        PlannerConfig(cost_pool=0)
    with pytest.raises(ValueError, match="no 'gripper' modality"):
        Planner(model, "gripper", absolute(LOW, HIGH))
    with pytest.raises(ValueError, match="low <= high"):
        absolute([1.0], [0.0])
    with pytest.raises(ValueError, match="the goal image is"):
        Planner(model, "twist", absolute(LOW, HIGH), settings()).plan(start, np.zeros((16, 16, 3), np.uint8))
