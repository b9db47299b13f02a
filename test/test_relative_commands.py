"""Joint targets read as each frame's change since the command before: exact numbers, sessions, clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, sampled_chunk_commands, tiny_config

from astra_model import AstraWorldModel
from astra_model.actions import as_model_reads
from astra_model.data import VideoEpisode, action_stats
from astra_model.relative_commands import encoder_with_targets
from astra_model.train import warm_start

JOINTS = {"joints": 4}
CHANGES = {"relative_commands": {"joints": "change"}}
TARGETS = {"relative_commands": {"joints": "change_and_target"}}


def _targets(n: int, seed: int) -> np.ndarray:
    """`[n, 4]` smooth joint targets (rad)."""
    return np.cumsum(np.random.default_rng(seed).normal(0, 0.1, (n, 4)), axis=0).astype(np.float32)


def _joint_model(relative: bool, targets: bool = False) -> AstraWorldModel:
    torch.manual_seed(0)
    extensions = (TARGETS if targets else CHANGES) if relative else {}
    config = tiny_config(modalities=JOINTS, action_labels={}, extensions=extensions, history={"with_actions": True})
    model = AstraWorldModel(config).eval()
    randomise_action_path(model)
    return model


def test_relative_commands_exact_numbers():
    cfg = tiny_config(modalities=JOINTS, action_labels={}, extensions=CHANGES)
    targets = torch.tensor([[[1.0, 2, 3, 4], [1.5, 2, 2, 4], [1.5, 2, 2, 5]]])
    read = as_model_reads({"joints": targets}, cfg)["joints"]
    assert read.dtype == torch.float32 and read.shape == (1, 3, 4)
    assert read.tolist() == [[[0, 0, 0, 0], [0.5, 0, -1, 0], [0, 0, 0, 1]]]  # the first: no change known
    after = as_model_reads({"joints": targets}, cfg, previous={"joints": torch.tensor([[1.0, 1, 1, 1]])})["joints"]
    assert after[0, 0].tolist() == [0, 1, 2, 3]
    assert torch.equal(after[:, 1:], read[:, 1:])
    plain = tiny_config(modalities=JOINTS, action_labels={})
    assert torch.equal(as_model_reads({"joints": targets}, plain)["joints"], targets)


def test_a_model_reading_relative_commands_cannot_see_the_offset(seed_frames):
    """Two command streams that differ by a constant offset move the arm alike, read as changes."""
    targets = _targets(21, seed=0)

    def rollout(model: AstraWorldModel, offset: float) -> np.ndarray:
        session = model.start(seed_frames, seed=2, commands={"joints": targets[:5] + offset})
        return np.stack([session.step({"joints": targets[k : k + 8] + offset}) for k in (5, 13)])

    relative = _joint_model(relative=True)
    # float32 rounding of target + offset - (previous + offset) may flip a pixel by one grey level
    np.testing.assert_allclose(rollout(relative, 0.0), rollout(relative, 0.7), atol=1)
    absolute = _joint_model(relative=False)
    moved = rollout(absolute, 0.0).astype(int) - rollout(absolute, 0.7)
    assert np.abs(moved).max() > 1


def test_command_targets_read_the_change_then_the_target():
    cfg = tiny_config(modalities=JOINTS, action_labels={}, extensions=TARGETS)
    targets = torch.tensor([[[1.0, 2, 3, 4], [1.5, 2, 2, 4]]])
    read = as_model_reads({"joints": targets}, cfg, previous={"joints": torch.tensor([[1.0, 1, 1, 1]])})["joints"]
    assert read.shape == (1, 2, 8) and cfg.read_dim("joints") == 8
    assert cfg.action_input_dim("joints") == 8 * cfg.temporal_ratio + 1  # and the history flag
    assert read.tolist() == [[[0, 1, 2, 3, 1, 2, 3, 4], [0.5, 0, -1, 0, 1.5, 2, 2, 4]]]


def test_a_model_reading_command_targets_sees_the_offset(seed_frames):
    """With the targets beside the changes, the same changes from another pose are another command."""
    targets = _targets(21, seed=0)
    model = _joint_model(relative=True, targets=True)
    session = model.start(seed_frames, seed=2, commands={"joints": targets[:5]})
    branches = session.fork(2)
    moved = branches.step({"joints": np.stack([targets[5:13], targets[5:13] + 0.7])})
    assert moved.shape == (2, 8, *seed_frames.shape[1:]) and moved.dtype == np.uint8
    assert np.abs(moved[0].astype(int) - moved[1]).max() > 1
    with pytest.raises(ValueError, match=r"actions\['joints'\] must be \[batch, 8, 4\]"):
        session.step({"joints": np.zeros((8, 8), np.float32)})  # users command the targets alone


def test_a_model_warm_started_with_targets_reproduces_the_one_without(seed_frames, tmp_path):
    """The widened encoder's target columns start at zero: the same rollout until training moves them."""
    trained = _joint_model(relative=True)
    trained.save_pretrained(tmp_path)
    config = trained.config.replace(extensions=TARGETS)
    wide = AstraWorldModel(config, backbone=trained.backbone, vae=trained.vae)
    wide.set_trainable()
    assert warm_start(wide, tmp_path) == []
    weight, old = wide.moae.encoders["joints"].weight, trained.moae.encoders["joints"].weight
    assert weight.shape == (old.shape[0], 2 * old.shape[1] - 1)
    assert torch.equal(weight[:, :4], old[:, :4]) and torch.equal(weight[:, 4:8], torch.zeros(old.shape[0], 4))
    targets = _targets(13, seed=3)

    def rollout(model: AstraWorldModel) -> np.ndarray:
        return model.eval().start(seed_frames, seed=1, commands={"joints": targets[:5]}).step({"joints": targets[5:]})

    np.testing.assert_allclose(rollout(wide), rollout(trained), atol=1)
    with pytest.raises(ValueError, match=r"does not read 2 x 4 commands \+ flag"):
        encoder_with_targets(old, per_frame=4, frames=2)


def test_session_reads_each_chunk_from_the_last_command(seed_frames):
    targets = _targets(21, seed=1)
    session = _joint_model(relative=True).start(seed_frames, commands={"joints": targets[:5]})
    session.step({"joints": targets[5:13]})
    branches = session.fork(2)
    branches.step({"joints": np.stack([targets[13:21], targets[13:21] + 1.0])})
    stored = branches.state.history.actions["joints"]  # [2, latent frames, 4 * 4]
    expected = np.diff(targets[:21], axis=0).reshape(5, 16)
    np.testing.assert_allclose(stored[0, 1:].numpy(), expected, atol=1e-6)
    jumped = expected[3:].copy()
    jumped[0, :4] += 1.0  # the second branch's first target jumps by 1 rad from the shared last command
    np.testing.assert_allclose(stored[1, 4:].numpy(), jumped, atol=1e-6)
    np.testing.assert_array_equal(branches.state.last_commands["joints"].numpy(), [targets[20], targets[20] + 1.0])
    branches.step(None)  # a chunk without commands: the last command is unknown
    assert "joints" not in branches.state.last_commands


def test_training_clips_and_stats_read_relative_commands():
    cfg = tiny_config(modalities=JOINTS, action_labels={}, extensions=CHANGES)
    targets = _targets(21, seed=2)
    changes = np.diff(targets, axis=0, prepend=targets[:1])
    read, first = sampled_chunk_commands(cfg, "joints", targets)
    np.testing.assert_allclose(read, changes[first : first + 8], atol=1e-6)
    stats = action_stats([VideoEpisode(np.zeros((21, 8, 8, 3), np.uint8), {"joints": targets}, "ep")], cfg)
    np.testing.assert_allclose(stats["joints"]["mean"], changes[1:].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["joints"]["std"], changes[1:].std(axis=0, ddof=1), atol=1e-6)


def test_training_stats_have_the_width_the_model_reads():
    cfg = tiny_config(modalities=JOINTS, action_labels={}, extensions=TARGETS)
    targets = _targets(21, seed=2)
    stats = action_stats([VideoEpisode(np.zeros((21, 8, 8, 3), np.uint8), {"joints": targets}, "ep")], cfg)
    np.testing.assert_allclose(stats["joints"]["mean"][4:], targets[1:].mean(axis=0), atol=1e-6)
    assert cfg.replace(action_stats=stats).action_stats["joints"] == stats["joints"]
    with pytest.raises(ValueError, match=r"action_stats\['joints'\] needs 'mean' and positive 'std', 8 each"):
        cfg.replace(action_stats={"joints": {"mean": [0.0] * 4, "std": [1.0] * 4}})


def test_config_refuses_relative_commands_it_cannot_read():
    with pytest.raises(ValueError, match="relative_commands names 'gripper', which is not a modality"):
        tiny_config(modalities=JOINTS, action_labels={}, extensions={"relative_commands": {"gripper": "change"}})
    with pytest.raises(ValueError, match=r"relative_commands names 'camera_pose', .* or is in relative_poses"):
        tiny_config(
            modalities={"camera_pose": 7},
            action_labels={},
            relative_poses=["camera_pose"],
            extensions={"relative_commands": {"camera_pose": "change"}},
        )
    with pytest.raises(ValueError, match=r"or reads it as 'target', not one of \('change', 'change_and_target'\)"):
        tiny_config(modalities=JOINTS, action_labels={}, extensions={"relative_commands": {"joints": "target"}})
