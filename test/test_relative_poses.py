"""Camera poses read relative to the frame before: exact numbers, and a model that cannot see the world frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, sampled_chunk_commands, tiny_config
from scipy.spatial.transform import Rotation

from astra_model import AstraWorldModel
from astra_model.poses import relative_to_previous

IDENTITY = [0, 0, 0, 0, 0, 0, 1]


def _yaw(degrees: float) -> list[float]:
    return Rotation.from_euler("z", degrees, degrees=True).as_quat().tolist()


def _trajectory(n: int, seed: int) -> np.ndarray:
    """`[n, 7]` smooth absolute camera poses."""
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.normal(0, 0.1, (n, 3)), axis=0)
    angles = np.cumsum(rng.normal(0, 5, (n, 3)), axis=0)
    return np.concatenate([positions, Rotation.from_euler("ZYX", angles, degrees=True).as_quat()], -1).astype(
        np.float32
    )


def _moved(poses: np.ndarray, translation: list[float], yaw: float) -> np.ndarray:
    """The same trajectory expressed in another world frame."""
    g = Rotation.from_euler("z", yaw, degrees=True)
    moved = np.concatenate([g.apply(poses[:, :3]) + translation, (g * Rotation.from_quat(poses[:, 3:])).as_quat()], -1)
    return moved.astype(np.float32)


def test_relative_to_previous_exact_numbers():
    poses = np.array(
        [
            [1, 0, 0, *_yaw(90)],
            [1, 1, 0, *_yaw(90)],  # one metre along world +y: the camera's own +x
            [1, 1, 2, *_yaw(180)],  # two metres up while turning 90 degrees left
        ]
    )
    rel = relative_to_previous(poses)
    assert rel.dtype == np.float32 and rel.shape == (3, 7)
    np.testing.assert_allclose(rel, [IDENTITY, [1, 0, 0, 0, 0, 0, 1], [0, 0, 2, *_yaw(90)]], atol=1e-6)
    from_origin = relative_to_previous(poses[:1], previous=np.array(IDENTITY, np.float64))
    np.testing.assert_allclose(from_origin[0], poses[0], atol=1e-6)
    batched = relative_to_previous(np.stack([poses, poses[::-1]]), previous=np.stack([poses[0], poses[2]]))
    np.testing.assert_allclose(batched[0], rel, atol=1e-6)
    assert batched[1, 0].tolist() == IDENTITY  # a first pose equal to the previous one: no motion


def test_relative_to_previous_refuses_what_is_not_a_pose():
    with pytest.raises(ValueError, match=r"poses must be \[\.\.\., N, 7\]"):
        relative_to_previous(np.zeros((4, 6)))
    with pytest.raises(ValueError, match="poses has a zero-norm quaternion"):
        relative_to_previous(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="previous has a zero-norm quaternion"):
        relative_to_previous(np.array([IDENTITY]), previous=np.zeros(7))


def _camera_model(relative: bool) -> AstraWorldModel:
    torch.manual_seed(0)
    config = tiny_config(
        modalities={"camera_pose": 7},
        action_labels={},
        relative_poses=["camera_pose"] if relative else [],
        history={"with_actions": True},
    )
    model = AstraWorldModel(config).eval()
    randomise_action_path(model)
    return model


def _rollout(model: AstraWorldModel, seed_frames: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Start with the seed frames' commands, one chunk, then two forked branches of the next."""
    session = model.start(seed_frames, seed=2, commands={"camera_pose": poses[:5]})
    first = session.step({"camera_pose": poses[5:13]})
    branches = session.fork(2).step({"camera_pose": np.stack([poses[13:21], poses[13:21][::-1]])})
    return np.concatenate([first[None].repeat(2, 0), branches], axis=1)


def test_a_model_reading_relative_poses_cannot_see_the_world_frame(seed_frames):
    poses = _trajectory(21, seed=0)
    moved = _moved(poses, [3.0, -2.0, 0.5], yaw=130)
    relative = _camera_model(relative=True)
    np.testing.assert_allclose(_rollout(relative, seed_frames, poses), _rollout(relative, seed_frames, moved), atol=1)
    absolute = _camera_model(relative=False)
    assert not np.array_equal(_rollout(absolute, seed_frames, poses), _rollout(absolute, seed_frames, moved))


def test_session_reads_each_chunk_from_where_the_last_one_left_the_camera(seed_frames):
    poses = _trajectory(21, seed=1)
    session = _camera_model(relative=True).start(seed_frames, commands={"camera_pose": poses[:5]})
    session.step({"camera_pose": poses[5:13]})
    snap = session.snapshot()
    session.step({"camera_pose": poses[13:21]})
    stored = session.state.history.actions["camera_pose"][0]  # [latent frames, 4 * 7]
    expected = relative_to_previous(poses[1:21], previous=poses[0]).reshape(5, 28)
    np.testing.assert_allclose(stored[1:].numpy(), expected, atol=1e-6)
    session.restore(snap)
    assert torch.equal(session.state.last_commands["camera_pose"], torch.from_numpy(poses[12:13]))
    session.step(None)  # a chunk without poses: where it left the camera is unknown
    assert "camera_pose" not in session.state.last_commands


def test_training_clips_give_the_model_relative_poses():
    cfg = tiny_config(modalities={"camera_pose": 7}, action_labels={}, relative_poses=["camera_pose"])
    poses = _trajectory(21, seed=2)
    read, first = sampled_chunk_commands(cfg, "camera_pose", poses)
    np.testing.assert_allclose(read, relative_to_previous(poses)[first : first + 8], atol=1e-6)


def test_a_session_refuses_a_pose_without_rotation_and_keeps_its_state(seed_frames):
    poses = _trajectory(13, seed=3)
    session = _camera_model(relative=True).start(seed_frames, commands={"camera_pose": poses[:5]})
    bad = poses[5:13].copy()
    bad[4, 3:] = 0
    with pytest.raises(ValueError, match=r"actions\['camera_pose'\]: poses has a zero-norm quaternion"):
        session.step({"camera_pose": bad})
    assert session.step_count == 0
    assert torch.equal(session.state.last_commands["camera_pose"][0], torch.from_numpy(poses[4]))


def test_config_refuses_relative_poses_for_what_is_not_a_pose():
    with pytest.raises(ValueError, match="relative_poses names 'twist', which is not a 7-D pose modality"):
        tiny_config(relative_poses=["twist"])
