"""Evaluation metrics against known answers: image similarity, optical-flow camera motion, motion scores."""

from __future__ import annotations

import math
import sys
import types

import cv2
import numpy as np
import pytest

from astra_ros import eval_metrics
from astra_ros.eval_metrics import (
    PSNR_CAP_DB,
    aggregate,
    estimate_motion,
    load_lpips,
    motion_agreement,
    psnr,
    score_rollout,
    sequence_motion,
    ssim,
)

RNG = np.random.default_rng(0)
# Smooth random texture: structure at several scales, as optical flow needs.
TEXTURE = cv2.GaussianBlur(RNG.integers(0, 256, size=(256, 256, 3), dtype=np.uint8), (0, 0), 1.5)


def view(dx: float, dy: float, size: int = 64) -> np.ndarray:
    """Crop whose content is moved by (dx, dy) px relative to ``view(0, 0)`` (x right, y down)."""
    x0, y0 = 96 - int(dx), 96 - int(dy)
    return np.ascontiguousarray(TEXTURE[y0 : y0 + size, x0 : x0 + size])


def pan(step_x: int, frames: int, size: int = 64) -> np.ndarray:
    """``[frames, size, size, 3]`` camera pan: content moves ``step_x`` px per frame."""
    return np.stack([view(step_x * i, 0, size) for i in range(frames)])


# --- image metrics --------------------------------------------------------------------------------


def test_identical_frames_give_capped_psnr_and_unit_ssim() -> None:
    frame = view(0, 0)
    assert psnr(frame, frame) == PSNR_CAP_DB
    assert ssim(frame, frame) == pytest.approx(1.0)


def test_psnr_matches_its_definition() -> None:
    ref = view(0, 0)
    pred = np.clip(ref.astype(int) + RNG.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8)
    mse = np.mean((ref.astype(float) - pred) ** 2)
    assert psnr(pred, ref) == pytest.approx(10 * math.log10(255**2 / mse))


def test_ssim_orders_degradations() -> None:
    ref = view(0, 0)
    slightly = cv2.GaussianBlur(ref, (3, 3), 0.5)
    heavily = cv2.GaussianBlur(ref, (9, 9), 4.0)
    assert 1.0 > ssim(slightly, ref) > ssim(heavily, ref)


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (3, 9), (6, 40)])
def test_ssim_on_frames_smaller_than_its_window(shape: tuple[int, int]) -> None:
    frame = view(0, 0)[: shape[0], : shape[1]]
    assert ssim(frame, frame) == pytest.approx(1.0)
    assert ssim(255 - frame, frame) < 0.5


def test_ssim_refuses_frames_under_3_px() -> None:
    frame = view(0, 0)[:2, :8]
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim(frame, frame)


# --- camera motion --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("shift", [(2, 0), (0, -3), (3, 2), (-4, 1)])
def test_optical_flow_recovers_a_global_shift(size: int, shift: tuple[int, int]) -> None:
    dx, dy, zoom, rot = estimate_motion(view(0, 0, size), view(*shift, size))
    assert (dx, dy) == pytest.approx(shift, abs=0.15)
    assert abs(zoom) < 0.15 and abs(rot) < 0.15


def test_zoom_and_roll_have_their_own_components() -> None:
    frame = view(0, 0, 96)
    centre = (47.5, 47.5)
    zoomed = cv2.warpAffine(frame, cv2.getRotationMatrix2D(centre, 0, 1.05), (96, 96), borderMode=cv2.BORDER_REFLECT)
    rolled = cv2.warpAffine(frame, cv2.getRotationMatrix2D(centre, -3, 1.0), (96, 96), borderMode=cv2.BORDER_REFLECT)
    dx, dy, zoom, rot = estimate_motion(frame, zoomed)
    assert zoom > 0.5 and abs(rot) < 0.2 and abs(dx) < 0.2 and abs(dy) < 0.2
    dx, dy, zoom, rot = estimate_motion(frame, rolled)  # -3° in OpenCV = clockwise on screen
    assert rot > 0.5 and abs(zoom) < 0.2 and abs(dx) < 0.2 and abs(dy) < 0.2


def test_sequence_motion_has_one_row_per_frame_pair() -> None:
    motion = sequence_motion(pan(2, 5))
    assert motion.shape == (4, 4)
    np.testing.assert_allclose(motion[:, 0], 2.0, atol=0.15)


def test_motion_score_is_one_for_identical_and_low_for_opposite_motion() -> None:
    right, left = sequence_motion(pan(2, 9)), sequence_motion(pan(-2, 9))
    cos, err = motion_agreement(right, right)
    assert cos == pytest.approx(1.0) and err == pytest.approx(0.0)
    cos, err = motion_agreement(right, left)
    assert cos < -0.95 and err > 0.95
    cos, err = motion_agreement(right, 2 * right)  # right direction, twice the speed
    assert cos == pytest.approx(1.0) and err == pytest.approx(1 / 3)


def test_static_sequences_agree_and_static_versus_moving_scores_zero() -> None:
    still, moving = np.zeros((8, 4)), np.tile([2.0, 0.0, 0.0, 0.0], (8, 1))
    assert motion_agreement(still, still) == (1.0, 0.0)
    assert motion_agreement(still, moving) == (0.0, 1.0)
    assert motion_agreement(moving, still) == (0.0, 1.0)


# --- whole rollouts -------------------------------------------------------------------------------


def test_score_rollout_perfect_prediction_versus_copy_last_frame() -> None:
    frames = pan(2, 9)
    last_seed, recorded = frames[0], frames[1:]
    perfect = score_rollout(recorded, recorded, last_seed, frames_per_chunk=4)
    frozen = score_rollout(np.repeat(last_seed[None], 8, axis=0), recorded, last_seed, frames_per_chunk=4)

    assert set(perfect.per_frame) == {"psnr", "ssim", "motion_epe"}
    assert set(perfect.per_chunk) == {"psnr", "ssim", "motion_epe", "motion_cos", "motion_err"}
    assert all(len(v) == 8 for v in perfect.per_frame.values())
    assert all(len(v) == 2 for v in perfect.per_chunk.values())
    np.testing.assert_allclose(perfect.per_frame["psnr"], PSNR_CAP_DB)
    np.testing.assert_allclose(perfect.per_chunk["motion_cos"], 1.0)
    np.testing.assert_allclose(perfect.per_frame["motion_epe"], 0.0, atol=1e-9)
    np.testing.assert_allclose(frozen.per_chunk["motion_cos"], 0.0)
    np.testing.assert_allclose(frozen.per_chunk["motion_err"], 1.0, atol=1e-3)
    np.testing.assert_allclose(frozen.per_frame["motion_epe"], 2.0, atol=0.2)  # the missed 2 px/frame pan
    assert frozen.mean("psnr") < perfect.mean("psnr")
    assert frozen.per_frame["psnr"][0] > frozen.per_frame["psnr"][-1]  # the scene drifts away from the copy


def test_score_rollout_checks_shapes() -> None:
    frames = pan(1, 7)
    with pytest.raises(ValueError, match="multiple of 4"):
        score_rollout(frames[1:], frames[1:], frames[0], frames_per_chunk=4)


def test_aggregate_over_rollouts_per_step() -> None:
    stats = aggregate([{"psnr": np.array([10.0, 20.0])}, {"psnr": np.array([30.0, 20.0])}])
    assert stats == {"psnr": {"mean": [20.0, 20.0], "std": [10.0, 0.0], "median": [20.0, 20.0]}}


# --- LPIPS ----------------------------------------------------------------------------------------


def test_lpips_reports_unavailable_without_package_or_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eval_metrics.importlib.util, "find_spec", lambda name: None)
    fn, status = load_lpips()
    assert fn is None
    assert status.startswith("unavailable (weights not present")


def test_lpips_is_used_when_package_and_weights_are_present(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A stand-in ``lpips`` package with weight files on disk: the metric is computed through it."""
    import torch

    package = tmp_path / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "weights" / "v0.1" / "alex.pth").write_bytes(b"")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "alexnet-owt-test.pth").write_bytes(b"")

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net: str, verbose: bool) -> None:
            super().__init__()

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            assert a.shape[1] == 3 and a.min() >= -1 and a.max() <= 1  # NCHW in [-1, 1]
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    spec = types.SimpleNamespace(origin=str(package / "__init__.py"))
    monkeypatch.setattr(eval_metrics.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    fn, status = load_lpips()
    assert status.startswith("available") and fn is not None
    frames = pan(2, 9)
    scores = score_rollout(frames[1:], frames[1:], frames[0], frames_per_chunk=4, lpips_fn=fn)
    np.testing.assert_allclose(scores.per_frame["lpips"], 0.0)
    assert scores.per_chunk["lpips"].shape == (2,)
