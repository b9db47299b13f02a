"""Rendering of an evaluation report: ``report.json``, ``report.md``, metric plots and comparison videos.

Everything here renders the report dictionary built by :mod:`astra_ros.bag_eval` (its layout is
described there), so ``report.md`` and the plots can be regenerated from ``report.json`` alone.
Plots use matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend
switch); videos are H.264 MP4 through imageio-ffmpeg.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import imageio.v3 as iio
import numpy as np
from matplotlib.figure import Figure

from astra_ros.eval_metrics import HIGHER_IS_BETTER, PSNR_CAP_DB, STATIC_PX

METRIC_INFO: dict[str, dict[str, str]] = {
    "psnr": {
        "label": "PSNR",
        "unit": "dB",
        "description": f"peak signal-to-noise ratio of each frame (scikit-image), capped at {PSNR_CAP_DB:g} dB",
    },
    "ssim": {"label": "SSIM", "unit": "", "description": "structural similarity of each frame (scikit-image)"},
    "lpips": {"label": "LPIPS", "unit": "", "description": "learned perceptual distance (AlexNet)"},
    "motion_epe": {
        "label": "motion error",
        "unit": "px/frame",
        "description": "distance between the predicted and recorded camera motion (dx, dy, zoom, roll) per frame",
    },
    "motion_cos": {
        "label": "motion cosine",
        "unit": "",
        "description": "cosine between the predicted and recorded camera-motion sequences of a chunk",
    },
    "motion_err": {
        "label": "motion rel. error",
        "unit": "",
        "description": "|P - R| / (|P| + |R|) of the camera-motion sequences of a chunk",
    },
}
MODEL, BASELINE = "model", "baseline"
_LEGEND = {MODEL: "world model", BASELINE: "copy last frame"}
_VIDEO_MIN_HEIGHT = 256  # px: tiny frames are upscaled (nearest neighbour) to at least this height
_VIDEO_LABEL_HEIGHT = 22  # px: caption strip above the panels
_VIDEO_GAP = 4  # px between panels


def metric_title(name: str) -> str:
    """``"PSNR [dB] ↑"``: label, unit and which direction is better."""
    info = METRIC_INFO[name]
    unit = f" [{info['unit']}]" if info["unit"] else ""
    return f"{info['label']}{unit} {'↑' if HIGHER_IS_BETTER[name] else '↓'}"


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """``report.json``; all values are finite (PSNR is capped), so it is strict JSON."""
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


# --- plots ----------------------------------------------------------------------------------------


def write_plots(report: Mapping[str, Any], out_dir: Path) -> list[str]:
    """One PNG per metric: model and baseline mean ± std over rollouts vs horizon; returns file names."""
    names = []
    for metric in report["summary"][MODEL]:
        name = f"plot_{metric}.png"
        if metric in report["per_frame"][MODEL]:
            figure = _per_frame_figure(report, metric)
        else:
            figure = _per_chunk_figure(report, metric)
        figure.savefig(out_dir / name, dpi=100)
        names.append(name)
    return names


def _per_frame_figure(report: Mapping[str, Any], metric: str) -> Figure:
    figure, axes = _figure(report, metric)
    settings = report["settings"]
    for who in (MODEL, BASELINE):
        stats = report["per_frame"][who][metric]
        mean, std = np.array(stats["mean"]), np.array(stats["std"])
        steps = np.arange(1, len(mean) + 1)
        axes.plot(steps, mean, marker=".", label=_LEGEND[who])
        axes.fill_between(steps, mean - std, mean + std, alpha=0.2)
    for chunk in range(1, settings["horizon_chunks"]):
        axes.axvline(chunk * settings["frames_per_chunk"] + 0.5, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel(f"frames ahead (chunks of {settings['frames_per_chunk']} frames, dotted)")
    axes.legend()
    return figure


def _per_chunk_figure(report: Mapping[str, Any], metric: str) -> Figure:
    figure, axes = _figure(report, metric)
    for offset, who in ((-0.05, MODEL), (0.05, BASELINE)):
        stats = report["per_chunk"][who][metric]
        steps = np.arange(1, len(stats["mean"]) + 1) + offset  # offset so error bars do not overlap
        axes.errorbar(steps, stats["mean"], yerr=stats["std"], marker="o", capsize=4, label=_LEGEND[who])
    axes.set_xticks(range(1, report["settings"]["horizon_chunks"] + 1))
    axes.set_xlabel("chunks ahead")
    axes.legend()
    return figure


def _figure(report: Mapping[str, Any], metric: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    rollouts = len(report["rollouts"])
    axes.set_title(f"{metric_title(metric)} vs horizon ({rollouts} rollout{'s' * (rollouts != 1)}, mean ± std)")
    axes.set_ylabel(metric_title(metric))
    axes.grid(alpha=0.3)
    return figure, axes


# --- videos ---------------------------------------------------------------------------------------


def write_video(recorded: np.ndarray, predicted: np.ndarray, path: Path, fps: float, caption: str) -> None:
    """Side-by-side MP4: recorded | predicted | absolute difference.

    Args:
        recorded: uint8 ``[N, H, W, 3]``.
        predicted: uint8 ``[N, H, W, 3]`` at the same times.
        fps: playback rate (frames/s).
        caption: text after the frame counter in the caption strip.
    """
    scale = max(1, math.ceil(_VIDEO_MIN_HEIGHT / recorded.shape[1]))
    frames = [
        _video_frame(rec, pred, scale, f"t+{k + 1} {caption}")
        for k, (rec, pred) in enumerate(zip(recorded, predicted, strict=True))
    ]
    iio.imwrite(path, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)


def _video_frame(recorded: np.ndarray, predicted: np.ndarray, scale: int, caption: str) -> np.ndarray:
    """One video frame ``[h, w, 3]`` with even sides (H.264's 4:2:0 chroma needs them)."""
    diff = np.abs(recorded.astype(np.int16) - predicted.astype(np.int16)).astype(np.uint8)
    panels = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in (recorded, predicted, diff)]
    height, width = panels[0].shape[:2]
    total_w = 3 * width + 2 * _VIDEO_GAP
    canvas = np.full((_VIDEO_LABEL_HEIGHT + height + 1, total_w + 1, 3), 255, np.uint8)
    for i, (panel, name) in enumerate(zip(panels, ("recorded", "predicted", "|difference|"), strict=True)):
        x = i * (width + _VIDEO_GAP)
        canvas[_VIDEO_LABEL_HEIGHT : _VIDEO_LABEL_HEIGHT + height, x : x + width] = panel
        _put_text(canvas, name if i else f"{name}  {caption}", x + 3)
    return canvas[: canvas.shape[0] // 2 * 2, : canvas.shape[1] // 2 * 2]


def _put_text(canvas: np.ndarray, text: str, x: int) -> None:
    cv2.putText(canvas, text, (x, _VIDEO_LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


# --- markdown -------------------------------------------------------------------------------------


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    """``report.md``: settings, summary and per-chunk tables, plots, videos and how to read them."""
    sections = [
        _md_header(report),
        _md_summary(report),
        _md_per_chunk(report),
        _md_per_frame(report),
        _md_rollouts(report),
        _md_files(report),
        _md_meaning(report),
    ]
    path.write_text("\n\n".join(sections) + "\n")


def _md_header(report: Mapping[str, Any]) -> str:
    episode, settings = report["episode"], report["settings"]
    actions = ", ".join(f"{m} ← `{t}`" for m, t in report["action_topics"].items()) or "none (action-free)"
    lines = [
        "# World-model replay evaluation",
        "",
        f"- bag: `{report['bag']}`",
        f"- model: `{report['checkpoint']}`",
        f"- frames: `{report['image_topic']}`, {episode['frames']} usable frames of "
        f"{episode['frame_size'][0]}x{episode['frame_size'][1]} px (HxW), {episode['duration_s']:.2f} s, "
        f"~{episode['fps']:.2f} fps",
        f"- actions: {actions}",
        f"- rollouts: {len(report['rollouts'])}, each seeded with {settings['history_frames_used']} recorded "
        f"frames (of {settings['history_frames']} requested) and rolled out open-loop for "
        f"{settings['horizon_chunks']} chunk(s) × {settings['frames_per_chunk']} frames on the recorded actions",
        f"- sampling: {settings['steps']} denoising steps, guidance {settings['guidance']}, seed {settings['seed']}",
        f"- LPIPS: {report['lpips']}",
    ]
    lines += [f"- **warning:** {text}" for text in report["warnings"]]
    skipped = episode["skipped"]
    if skipped:
        counts = ", ".join(f"`{key}`: {count}" for key, count in skipped.items())
        lines.append(f"- **skipped messages** (the rest of the bag was evaluated): {counts}")
    return "\n".join(lines)


def _md_summary(report: Mapping[str, Any]) -> str:
    rows = [
        [metric_title(m), _fmt(report["summary"][MODEL][m]), _fmt(report["summary"][BASELINE][m]), _winner(report, m)]
        for m in report["summary"][MODEL]
    ]
    table = _md_table(["metric", "world model", "copy last frame", "better"], rows)
    return f"## Summary (mean over all rollouts and horizon steps)\n\n{table}"


def _md_per_chunk(report: Mapping[str, Any]) -> str:
    metrics = list(report["per_chunk"][MODEL])
    rows = []
    for chunk in range(report["settings"]["horizon_chunks"]):
        row = [str(chunk + 1)]
        for metric in metrics:
            model = report["per_chunk"][MODEL][metric]
            baseline = report["per_chunk"][BASELINE][metric]
            row.append(f"{_fmt(model['mean'][chunk])} ± {_fmt(model['std'][chunk])} / {_fmt(baseline['mean'][chunk])}")
        rows.append(row)
    table = _md_table(["chunk", *(metric_title(m) for m in metrics)], rows)
    return f"## Per chunk ahead\n\nEach cell: world model mean ± std over rollouts / copy-last-frame mean.\n\n{table}"


def _md_per_frame(report: Mapping[str, Any]) -> str:
    metrics = list(report["per_frame"][MODEL])
    count = len(report["per_frame"][MODEL][metrics[0]]["mean"])
    rows = [
        [str(k + 1)]
        + [
            f"{_fmt(report['per_frame'][MODEL][m]['mean'][k])} / {_fmt(report['per_frame'][BASELINE][m]['mean'][k])}"
            for m in metrics
        ]
        for k in range(count)
    ]
    table = _md_table(["frame", *(metric_title(m) for m in metrics)], rows)
    return (
        "## Per frame ahead\n\n<details><summary>world model mean / copy-last-frame mean, per frame</summary>\n\n"
        f"{table}\n\n</details>"
    )


def _md_rollouts(report: Mapping[str, Any]) -> str:
    rows = [
        [
            str(r["index"]),
            str(r["start_frame"]),
            f"{r['start_time_s']:.3f}",
            _fmt(r["score_psnr"]),
            _fmt(float(np.mean(r[BASELINE]["per_frame"]["psnr"]))),
            ", ".join(label for label, v in report["videos"].items() if v["rollout"] == r["index"]),
        ]
        for r in report["rollouts"]
    ]
    headers = ["rollout", "start frame", "start [s]", "model PSNR [dB]", "copy-last PSNR [dB]", "video"]
    return f"## Rollouts\n\nStart time is relative to the first usable frame.\n\n{_md_table(headers, rows)}"


def _md_files(report: Mapping[str, Any]) -> str:
    plots = "\n".join(f"![{name}]({name})" for name in report["plots"])
    videos = "\n".join(
        f"- {label}: [{v['file']}]({v['file']}) (rollout {v['rollout']}, PSNR {_fmt(v['psnr'])} dB)"
        for label, v in report["videos"].items()
    )
    bag = report["output_bag"]
    bag_line = (
        f"- bag: `{bag}`: the recording plus `{report['predicted_topic']}`; open it in Foxglove or RViz"
        if bag
        else "- bag: not written (see warnings)"
    )
    return (
        f"## Plots\n\n{plots}\n\n## Videos and bag\n\nVideos show recorded | predicted | absolute difference "
        f"(worst, median and best rollout by model PSNR).\n\n{videos}\n{bag_line}"
    )


def _md_meaning(report: Mapping[str, Any]) -> str:
    lines = ["## What the numbers mean", ""]
    for metric in report["summary"][MODEL]:
        lines.append(f"- **{metric_title(metric)}**: {METRIC_INFO[metric]['description']}.")
    lines += [
        "",
        "Camera motion is measured, not taken from the actions: OpenCV Farneback optical flow between "
        "consecutive frames, fitted with a similarity motion (dx, dy, zoom, roll in px/frame), on the "
        "predicted and on the recorded frames. Motion cosine 1 = moves the same way, 0 = unrelated, "
        "-1 = opposite; relative error 0 = same motion, 1 = opposite or one side static. A chunk whose "
        f"RMS motion is under {STATIC_PX} px/frame counts as static (both static: cosine 1, error 0).",
        "",
        "The copy-last-frame baseline repeats the last seed frame: it is hard to beat on PSNR/SSIM when "
        "the camera moves slowly, and it never moves, so a model that follows the actions should beat it "
        "on the motion metrics. A model below the baseline on every metric is not using the actions or "
        "the history well. Errors grow with the horizon because rollouts are open-loop: each chunk is "
        "conditioned on the model's own earlier predictions, never on the recording.",
    ]
    return "\n".join(lines)


def _winner(report: Mapping[str, Any], metric: str) -> str:
    model, baseline = report["summary"][MODEL][metric], report["summary"][BASELINE][metric]
    if math.isclose(model, baseline, rel_tol=1e-9, abs_tol=1e-12):
        return "tie"
    return "world model" if (model > baseline) == HIGHER_IS_BETTER[metric] else "copy last frame"


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
