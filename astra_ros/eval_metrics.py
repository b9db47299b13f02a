"""Frame and motion metrics for comparing predicted video with a recording.

Image metrics (per frame, RGB uint8, ``data_range=255``):

- ``psnr``: scikit-image ``peak_signal_noise_ratio``, in dB, higher is better. Identical frames have
  infinite PSNR; every PSNR is capped at :data:`PSNR_CAP_DB` so that means over frames stay finite.
- ``ssim``: scikit-image ``structural_similarity`` over the colour channels, in [-1, 1], higher is
  better. Its window is 7 px, or the largest odd size that fits for frames smaller than 7 px.
- ``lpips``: learned perceptual distance (AlexNet), lower is better; only when the ``lpips`` package
  and its weights are already on this machine (see :func:`load_lpips`), never downloaded.

Camera motion (OpenCV Farneback dense optical flow between consecutive frames, leaving out a border
band of 10 % of the smaller side where content enters or leaves): the flow field is fitted by least
squares with a similarity motion ``flow(p) = t + zoom * p/R + rot * J p/R`` around the image centre
(``J`` rotates by 90°, ``R`` is the RMS radius of the fitted pixels), which gives a 4-vector per frame
pair ``m = (dx, dy, zoom, rot)`` in pixels per frame: translation, and the radial (zoom: forward or
backward motion, > 0 when content grows) and tangential (roll, > 0 clockwise as displayed)
displacement at radius ``R``. ``dx, dy`` equal the mean flow vector. OpenCV's flow pyramid stops at
32 px, so on 32-64 px frames motion is tracked up to about 4 px per frame; larger frames track more.
Per chunk of ``n`` frames, the predicted and recorded sequences ``P, R`` (``[n, 4]``, flattened) are
compared:

- ``motion_cos`` = ``P·R / (|P| |R|)`` in [-1, 1]: 1 same motion (up to speed), 0 unrelated, -1
  opposite. A sequence whose RMS motion is below :data:`STATIC_PX` counts as static: both static
  scores 1 (they agree nothing moves), one static scores 0.
- ``motion_err`` = ``|P - R| / (|P| + |R|)`` in [0, 1]: 0 identical, 1 opposite or one static;
  unlike the cosine it also penalises the wrong speed (twice the speed scores 1/3). Both static: 0.
- ``motion_epe`` (per frame): ``|m_pred - m_rec|``, the error of the 4-vector, in px per frame.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PSNR_CAP_DB = 100.0
STATIC_PX = 0.1
SSIM_WINDOW = 7
FRAME_METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "motion_epe")
CHUNK_METRICS: tuple[str, ...] = (*FRAME_METRICS, "motion_cos", "motion_err")
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "motion_epe": False,
    "motion_cos": True,
    "motion_err": False,
}
_FLOW_MARGIN = 0.1  # fraction of the smaller side left out at each border
_FIT_POINTS = 4096  # flow vectors used by the similarity fit; more adds time, not accuracy

LpipsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of uint8 ``[H, W, 3]`` frames in dB, capped at :data:`PSNR_CAP_DB` (identical frames)."""
    with np.errstate(divide="ignore"):  # identical frames: MSE 0 -> inf, which the cap handles
        value = peak_signal_noise_ratio(ref, pred, data_range=255)
    return float(min(value, PSNR_CAP_DB))


def ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    """SSIM of uint8 ``[H, W, 3]`` frames; frames smaller than 7 px use a smaller (odd) window.

    Raises:
        ValueError: a side is under 3 px, where SSIM's local statistics are undefined.
    """
    side = min(ref.shape[:2])
    if side < 3:
        raise ValueError(f"SSIM needs frames of at least 3x3 px, got {ref.shape[0]}x{ref.shape[1]}")
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    return float(structural_similarity(ref, pred, win_size=window, channel_axis=-1, data_range=255))


def estimate_motion(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Camera motion between two uint8 ``[H, W, 3]`` frames: float64 ``[4]`` = (dx, dy, zoom, rot) px/frame.

    The content of ``prev`` moves by ``(dx, dy)`` to reach ``nxt`` (x right, y down).
    """
    return _fit_similarity(_dense_flow(prev, nxt))


def sequence_motion(frames: np.ndarray) -> np.ndarray:
    """Motion between consecutive frames of uint8 ``[N + 1, H, W, 3]``: float64 ``[N, 4]``."""
    return np.array([estimate_motion(a, b) for a, b in itertools.pairwise(frames)]).reshape(-1, 4)


def motion_agreement(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """``(motion_cos, motion_err)`` of two motion sequences ``[n, 4]`` (definitions: module docstring)."""
    p, r = pred.ravel(), ref.ravel()
    p_norm, r_norm = float(np.linalg.norm(p)), float(np.linalg.norm(r))
    floor = STATIC_PX * math.sqrt(len(pred))
    p_static, r_static = p_norm < floor, r_norm < floor
    if p_static and r_static:
        return 1.0, 0.0
    cos = 0.0 if p_static or r_static else float(p @ r) / (p_norm * r_norm)
    return cos, float(np.linalg.norm(p - r)) / (p_norm + r_norm)


@dataclass
class RolloutScores:
    """Metrics of one predicted rollout against its recording.

    Attributes:
        per_frame: metric -> float64 ``[N]`` over the ``N`` predicted frames.
        per_chunk: metric -> float64 ``[C]`` over the ``C = N / frames_per_chunk`` chunks; image metrics
            and ``motion_epe`` are the chunk's frame means.
    """

    per_frame: dict[str, np.ndarray]
    per_chunk: dict[str, np.ndarray]

    def mean(self, metric: str) -> float:
        """Mean of a per-frame metric (or of a per-chunk one) over the rollout."""
        values = self.per_frame.get(metric, self.per_chunk.get(metric))
        return float(np.mean(values))


def score_rollout(
    pred: np.ndarray,
    ref: np.ndarray,
    last_seed: np.ndarray,
    frames_per_chunk: int,
    lpips_fn: LpipsFn | None = None,
) -> RolloutScores:
    """Score a prediction against the recording.

    Args:
        pred: uint8 ``[N, H, W, 3]`` predicted frames, ``N`` a multiple of ``frames_per_chunk``.
        ref: uint8 ``[N, H, W, 3]`` recorded frames at the same times.
        last_seed: uint8 ``[H, W, 3]`` last frame the prediction started from, so the motion into the
            first predicted frame is scored too.
        frames_per_chunk: video frames per model step.
        lpips_fn: from :func:`load_lpips`; None leaves ``lpips`` out.
    """
    if pred.shape != ref.shape or len(pred) % frames_per_chunk:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must match, N a multiple of {frames_per_chunk}")
    per_frame = {
        "psnr": np.array([psnr(p, r) for p, r in zip(pred, ref, strict=True)]),
        "ssim": np.array([ssim(p, r) for p, r in zip(pred, ref, strict=True)]),
    }
    if lpips_fn is not None:
        per_frame["lpips"] = np.asarray(lpips_fn(pred, ref), dtype=np.float64)
    pred_motion = sequence_motion(np.concatenate([last_seed[None], pred]))
    ref_motion = sequence_motion(np.concatenate([last_seed[None], ref]))
    per_frame["motion_epe"] = np.linalg.norm(pred_motion - ref_motion, axis=1)
    chunks = len(pred) // frames_per_chunk
    per_chunk = {name: values.reshape(chunks, -1).mean(axis=1) for name, values in per_frame.items()}
    agreement = [
        motion_agreement(p, r) for p, r in zip(np.split(pred_motion, chunks), np.split(ref_motion, chunks), strict=True)
    ]
    per_chunk["motion_cos"] = np.array([cos for cos, _ in agreement])
    per_chunk["motion_err"] = np.array([err for _, err in agreement])
    return RolloutScores(per_frame, per_chunk)


def aggregate(per_rollout: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Statistics over rollouts per horizon step: metric -> {"mean", "std", "median"} lists ``[steps]``."""
    out: dict[str, dict[str, list[float]]] = {}
    for name in per_rollout[0]:
        stacked = np.stack([scores[name] for scores in per_rollout])
        out[name] = {
            "mean": stacked.mean(axis=0).tolist(),
            "std": stacked.std(axis=0).tolist(),
            "median": np.median(stacked, axis=0).tolist(),
        }
    return out


def load_lpips() -> tuple[LpipsFn | None, str]:
    """LPIPS (AlexNet) if the ``lpips`` package and its weights are present, without downloading.

    Returns:
        ``(fn, status)``: ``fn(pred, ref)`` maps uint8 ``[N, H, W, 3]`` pairs to float ``[N]``
        distances, or None with ``status`` saying why it is unavailable.
    """
    missing = _missing_lpips_files()
    if missing:
        return None, f"unavailable (weights not present: {missing})"
    import lpips  # only importable when _missing_lpips_files found the package
    import torch

    net = lpips.LPIPS(net="alex", verbose=False).eval()

    @torch.no_grad()
    def distance(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        def to_tensor(frames: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # LPIPS wants [-1, 1]

        return net(to_tensor(pred), to_tensor(ref)).flatten().numpy()

    return distance, "available (AlexNet)"


def _missing_lpips_files() -> str:
    """What keeps LPIPS from running offline, or "" when nothing does."""
    for package in ("lpips", "torchvision"):
        if importlib.util.find_spec(package) is None:
            return f"the {package} package is not installed"
    spec = importlib.util.find_spec("lpips")
    linear = Path(spec.origin or "").parent / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return f"{linear} missing"
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-*.pth")):
        return f"no AlexNet checkpoint in {hub}"
    return ""


def _dense_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Farneback flow of uint8 ``[H, W, 3]`` frames without a border band: float32 ``[h, w, 2]`` (x, y) px."""
    a = cv2.cvtColor(np.ascontiguousarray(prev), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(nxt), cv2.COLOR_RGB2GRAY)
    # OpenCV itself stops the pyramid at 32 px, so asking for 5 levels only matters on large frames.
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 3, 5, 1.1, 0)
    # Content entering or leaving at the border has no match; its flow would drag the fit to zero.
    margin = max(1, int(_FLOW_MARGIN * min(a.shape)))
    return flow[margin:-margin, margin:-margin]


def _fit_similarity(flow: np.ndarray) -> np.ndarray:
    """Least-squares similarity motion of a flow field ``[H, W, 2]``: ``[4]`` (dx, dy, zoom, rot) px."""
    h, w = flow.shape[:2]
    stride = max(1, round(math.sqrt(h * w / _FIT_POINTS)))
    ys, xs = np.mgrid[0:h:stride, 0:w:stride]
    x, y = (xs - (w - 1) / 2).ravel(), (ys - (h - 1) / 2).ravel()
    radius = math.sqrt(float(np.mean(x**2 + y**2))) or 1.0
    x, y = x / radius, y / radius
    one, zero = np.ones_like(x), np.zeros_like(x)
    # Rows: u = dx + zoom*x - rot*y ; v = dy + zoom*y + rot*x (coordinates in units of the radius).
    design = np.concatenate([np.stack([one, zero, x, -y], 1), np.stack([zero, one, y, x], 1)])
    sampled = flow[::stride, ::stride].reshape(-1, 2)
    target = np.concatenate([sampled[:, 0], sampled[:, 1]]).astype(np.float64)
    params, *_ = np.linalg.lstsq(design, target, rcond=None)
    return params
