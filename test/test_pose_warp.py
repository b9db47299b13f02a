"""The pose warp: the latest frame turned by the commanded rotation, exact where the maths fixes it, right
against the simulator's camera, and no change to a model until it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config
from scipy.spatial.transform import Rotation

from astra_model import AstraWorldModel, History
from astra_model.anchoring import Anchor
from astra_model.pose_warp import PoseWarp, cumulative_rotations
from astra_model.poses import relative_to_previous
from astra_ros.envs import make_env
from astra_ros.eval_metrics import psnr

NO_MOTION = [0, 0, 0, 0, 0, 0, 1]


def _turns(degrees: list[float], axis: str = "z") -> torch.Tensor:
    """`[1, N, 7]` relative poses, each turning by `degrees[k]` about `axis` and not moving."""
    quats = Rotation.from_euler(axis, np.asarray(degrees)[:, None], degrees=True).as_quat()
    return torch.tensor([[[0, 0, 0, *q] for q in quats]], dtype=torch.float32)


def test_rotations_accumulate_and_are_read_per_latent_frame():
    totals = cumulative_rotations(_turns([5, 10, -3, 8]), group=2)
    assert totals.shape == (1, 2, 3, 3)
    want = Rotation.from_euler("z", [[15], [20]], degrees=True).as_matrix()
    np.testing.assert_allclose(totals[0].numpy(), want, atol=1e-12)


def test_no_rotation_warps_the_latest_frame_onto_itself():
    latest = torch.randn(2, 16, 8, 8)
    out = PoseWarp(16, 32, fov_deg=70).warped(
        latest, torch.tensor([NO_MOTION] * 3, dtype=torch.float32).expand(2, -1, -1), 1
    )
    assert out.shape == (2, 17, 3, 8, 8)
    torch.testing.assert_close(out[:, :16], latest[:, :, None].expand(-1, -1, 3, -1, -1), rtol=0, atol=1e-6)
    assert torch.equal(out[:, 16], torch.ones(2, 3, 8, 8))


def test_turning_away_sees_nothing_of_the_old_view_and_a_small_turn_moves_it_sideways():
    latest = torch.zeros(1, 1, 8, 8)
    latest[..., 3] = 1.0  # a bright column left of the middle
    out = PoseWarp(1, 32, fov_deg=70).warped(latest, _turns([0.0, 90.0]), 1)
    assert out[0, 1, 1].sum() == 0 and out[0, 1, 0].sum() == 8 * 8
    # Turning left by the angle of one pixel at the middle brings what was left of it one pixel right.
    focal = 4 / np.tan(np.radians(35))
    turned = PoseWarp(1, 32, fov_deg=70).warped(latest, _turns([np.degrees(np.arctan(1 / focal))]), 1)
    assert turned[0, 0, 0, 4].argmax() == 4 and turned[0, 0, 0, 4, 4] > 0.9


def test_the_warp_matches_the_simulated_camera_after_a_turn():
    """The axes, the field of view and the direction of every sign, against MuJoCo's camera: its last view
    warped by the commanded turn is far closer to the next view than the last view itself."""
    with make_env("camera", seed=3, image_size=64) as env:
        env.reset()
        pose = env.current_pose()
        turned = np.concatenate(
            [pose[:3], (Rotation.from_quat(pose[3:]) * Rotation.from_euler("ZY", [12, -5], degrees=True)).as_quat()]
        )
        before, after = env.step(pose), env.step(turned)
    rel = torch.from_numpy(relative_to_previous(turned[None, None], pose[None]))
    image = torch.from_numpy(before).permute(2, 0, 1)[None].float()
    warped = PoseWarp(3, 32, fov_deg=70).warped(image, rel, 1)
    seen = warped[0, 3, 0].bool().numpy()
    predicted = warped[0, :3, 0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    assert 0.6 < seen.mean() < 1.0
    assert psnr(predicted[seen], after[seen]) > psnr(before[seen], after[seen]) + 6


def _models() -> tuple[AstraWorldModel, AstraWorldModel]:
    """The same random weights without and with a pose warp on camera poses."""
    base = dict(modalities={"camera_pose": 7}, action_labels={}, relative_poses=["camera_pose"])
    torch.manual_seed(0)
    plain = AstraWorldModel(tiny_config(**base)).eval()
    randomise_action_path(plain)
    warp = AstraWorldModel(tiny_config(**base, pose_warp={"camera_pose": 70.0})).eval()
    missing, unexpected = warp.load_state_dict(plain.state_dict(), strict=False)
    assert (
        sorted(missing) == ["pose_warp.camera_pose.embed.bias", "pose_warp.camera_pose.embed.weight"] and not unexpected
    )
    return plain, warp


def test_an_untrained_pose_warp_leaves_the_model_unchanged_and_the_action_free_branch_never_sees_it():
    plain, warp = _models()
    gen = torch.Generator().manual_seed(1)
    noisy, history = (
        torch.randn(2, 16, 2, 8, 8, generator=gen),
        History.from_latents(torch.randn(2, 16, 3, 8, 8, generator=gen)),
    )
    actions = {"camera_pose": _turns([4, -2, 6, 1, 3, 0, -5, 2]).expand(2, -1, -1)}
    t, mask = torch.tensor([700.0, 700.0]), torch.tensor([True, False])
    with torch.no_grad():
        want = plain(noisy, t, actions, history, action_mask=mask).velocity
        assert torch.equal(warp(noisy, t, actions, history, action_mask=mask).velocity, want)
        torch.nn.init.normal_(warp.pose_warp["camera_pose"].embed.weight, std=0.2)
        got = warp(noisy, t, actions, history, action_mask=mask).velocity
    assert not torch.allclose(got[0], want[0], atol=1e-3)  # the trained warp changes what the commands give
    assert torch.equal(got[1], want[1])  # dropped actions: no warp either


def test_a_pose_warp_saves_and_loads_bit_exact(tmp_path):
    _, warp = _models()
    torch.nn.init.normal_(warp.pose_warp["camera_pose"].embed.weight, std=0.2)
    warp.save_pretrained(tmp_path)
    loaded = AstraWorldModel.from_pretrained(tmp_path)
    assert loaded.config.pose_warp == {"camera_pose": 70.0}
    for name, tensor in warp.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("overrides", "fov"), [({}, 70.0), ({"relative_poses": ["camera_pose"]}, 180.0)], ids=["not-a-pose", "fov"]
)
def test_config_refuses_a_pose_warp_on_what_is_not_a_relative_pose_or_with_no_field_of_view(overrides, fov):
    with pytest.raises(ValueError, match=r"pose_warp\['camera_pose'\] must name a relative_poses modality"):
        tiny_config(modalities={"camera_pose": 7}, action_labels={}, pose_warp={"camera_pose": fov}, **overrides)


def test_a_turned_anchor_that_has_not_turned_is_the_fixed_cameras_anchor():
    gen = torch.Generator().manual_seed(0)
    frame, recon = (torch.rand(2, 3, 1, 8, 8, generator=gen) * 2 - 1 for _ in range(2))
    video = recon + 0.05 * torch.randn(2, 3, 4, 8, 8, generator=gen)
    still = torch.eye(3, dtype=torch.float64).expand(2, 4, 3, 3)
    turned = Anchor(frame, recon).turned(still, 70.0)
    assert turned.frame.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(turned.apply(video, 8.0), Anchor(frame, recon).apply(video, 8.0), rtol=0, atol=1e-6)
    turn = torch.from_numpy(Rotation.from_euler("z", 90, degrees=True).as_matrix()).expand(2, 4, 3, 3)
    away = Anchor(frame, recon).turned(turn, 70.0)
    assert torch.equal(away.apply(video, 8.0), video.clamp(-1, 1))  # it sees nothing of the true frame


def _camera_sessions(seed_frames):
    """A camera model's session (with an untrained pose warp) without and with a turned anchor (keeping
    detail everywhere it sees), the seed frames commanded from a still pose."""
    _, plain = _models()
    anchored = AstraWorldModel(plain.config.replace(turned_anchor={"camera_pose": 1e9})).eval()
    anchored.load_state_dict(plain.state_dict())
    still = np.array([NO_MOTION] * 5, np.float32)
    return [m.start(seed_frames, seed=4, commands={"camera_pose": still}) for m in (plain, anchored)]


def _turning(start_deg: float, step_deg: float) -> np.ndarray:
    """`[8, 7]` absolute poses turning about z from `start_deg` by `step_deg` a frame."""
    quats = Rotation.from_euler("z", (start_deg + step_deg * np.arange(1, 9))[:, None], degrees=True).as_quat()
    return np.concatenate([np.zeros((8, 3)), quats], axis=1).astype(np.float32)


def test_turned_anchor_chunks_carry_the_turn_since_the_true_frame_and_leave_the_model_alone(seed_frames):
    plain, anchored = _camera_sessions(seed_frames)
    for chunk in (_turning(0, 1.5), _turning(12, -0.5)):
        frames = [s.step({"camera_pose": chunk}).astype(int) for s in (plain, anchored)]
        assert torch.equal(plain.state.history.latents, anchored.state.history.latents)
        assert np.abs(frames[1] - frames[0]).mean() > 1  # the true frame's detail, turned
    # The turn composes across chunks: from the seed's still pose to the last pose, 8 degrees.
    np.testing.assert_allclose(
        anchored.state.turn[0].numpy(), Rotation.from_euler("z", 8, degrees=True).as_matrix(), atol=1e-6
    )
    fork = anchored.fork(3)
    assert fork.state.turn.shape == (3, 3, 3) and torch.equal(fork.state.turn[2], anchored.state.turn[0])
    # An action-free chunk leaves the turn unknown: the camera's later chunks are the model's own frames.
    for s in (plain, anchored):
        s.step(None)
    assert anchored.state.turn is None
    assert np.array_equal(*(s.step({"camera_pose": _turning(8, 1.0)}) for s in (plain, anchored)))


@pytest.mark.parametrize(("turned_anchor", "pose_warp"), [({"camera_pose": 24.0}, {}), ({"camera_pose": 0.0}, None)])
def test_config_refuses_a_turned_anchor_without_a_field_of_view_or_tolerance(turned_anchor, pose_warp):
    with pytest.raises(ValueError, match=r"turned_anchor\['camera_pose'\] must name a pose_warp modality"):
        tiny_config(
            modalities={"camera_pose": 7}, action_labels={}, relative_poses=["camera_pose"],
            pose_warp={"camera_pose": 70.0} if pose_warp is None else pose_warp, turned_anchor=turned_anchor,
        )  # fmt: skip
