"""The pose warp: the latest frame turned by the commanded rotation, exact where the maths fixes it, right
against the simulator's camera, and no change to a model until it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config
from scipy.spatial.transform import Rotation

from astra_model import AstraWorldModel, History
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
    warp = AstraWorldModel(tiny_config(**base, extensions={"pose_warp": {"camera_pose": 70.0}})).eval()
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
    assert loaded.config.extensions.pose_warp == {"camera_pose": 70.0}
    for name, tensor in warp.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("overrides", "fov"), [({}, 70.0), ({"relative_poses": ["camera_pose"]}, 180.0)], ids=["not-a-pose", "fov"]
)
def test_config_refuses_a_pose_warp_on_what_is_not_a_relative_pose_or_with_no_field_of_view(overrides, fov):
    with pytest.raises(ValueError, match=r"pose_warp\['camera_pose'\] must name a relative_poses modality"):
        warp = {"pose_warp": {"camera_pose": fov}}
        tiny_config(modalities={"camera_pose": 7}, action_labels={}, extensions=warp, **overrides)
