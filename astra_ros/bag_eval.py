"""``astra-eval``: how well does a world model predict a robot's own recording?

    astra-eval BAG --out DIR [--checkpoint MODEL] [--image-topic TOPIC]
               [--action-topic MODALITY=TOPIC ...] [--joint-names a,b,c]
               [--rollouts 8] [--history FRAMES] [--horizon CHUNKS] [--spacing FRAMES]
               [--seed 0] [--steps N] [--guidance S] [--clock header|log] [--device cpu]

For each rollout start frame ``s`` the model is seeded with the recorded frames ``[s - history, s)``
(it uses the longest ``1 + 4k`` suffix), fed, for each predicted frame, the recorded command that produced
it: the one in effect (zero-order hold, see :func:`astra_ros.bags.read_episode`) at the previous
frame's time, the convention the model is trained with (:func:`astra_model.data.produced_by`), and
rolled out open-loop for ``horizon`` chunks. Its frames are
compared with the recorded frames at the same times, and so are those of the copy-last-frame
baseline (the last seed frame repeated). Metrics: :mod:`astra_ros.eval_metrics`.

Model modalities without an action topic are left out of the conditioning (the model accepts any
subset of the modalities of one of its worlds).

Start frames: ``--spacing S`` starts at ``history, history + S, ...`` (at most ``--rollouts``).
Without it the rollouts are spread evenly over the episode, at least one horizon apart so that
predictions do not overlap; a short episode then gets fewer rollouts (noted as a warning).

Outputs in ``--out`` (see :mod:`astra_ros.eval_report` and :mod:`astra_ros.bag_export`)::

    report.json   settings, episode info, skipped messages, per-rollout / per-chunk / per-frame metrics
    report.md     the same as tables, plots and what the numbers mean
    plot_<metric>.png          metric vs horizon, world model vs copy-last-frame
    video_{worst,median,best}.mp4   recorded | predicted | |difference| (ranked by model PSNR)
    replay_bag/   MCAP rosbag2: every original topic + /astra/predicted/image

Every predicted frame is kept in memory until the outputs are written
(rollouts × horizon frames × H × W × 3 bytes).

``report.json`` layout: ``summary[who][metric]`` (mean over rollouts and steps), ``per_chunk`` and
``per_frame[who][metric] = {"mean", "std", "median"}`` (lists over horizon steps), with ``who`` in
``model`` / ``baseline``; ``rollouts[i]`` holds each rollout's start and raw per-frame / per-chunk
values.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from astra_model import AstraConfig, AstraWorldModel
from astra_model.checkpoint import CheckpointError, read_config
from astra_model.worlds import guidance_scale_of, world_of
from astra_ros import demo_model_path
from astra_ros.action_conversion import ACTION_MSG_TYPES, MODALITIES, normalize_type_name
from astra_ros.bag_export import PREDICTED_TOPIC, export_bag
from astra_ros.bags import (
    DEFAULT_ACTION_TOPICS,
    DEFAULT_IMAGE_TOPIC,
    BagError,
    Clock,
    Episode,
    bag_topics,
    read_episode,
)
from astra_ros.eval_metrics import CHUNK_METRICS, LpipsFn, RolloutScores, aggregate, load_lpips, score_rollout
from astra_ros.eval_report import (
    BASELINE,
    METRIC_INFO,
    MODEL,
    metric_title,
    write_json,
    write_markdown,
    write_plots,
    write_video,
)

OUTPUT_BAG = "replay_bag"
_NS_PER_S = 1e9


class EvalError(ValueError):
    """The evaluation cannot run as asked (model, topics or settings); the message says what to change."""


@dataclass
class EvalOptions:
    """Command-line settings; see ``astra-eval --help``."""

    bag: Path
    out: Path
    checkpoint: Path | None = None
    image_topic: str = DEFAULT_IMAGE_TOPIC
    action_topics: dict[str, str] | None = None
    joint_names: list[str] | None = None
    rollouts: int = 8
    history: int | None = None
    horizon: int = 2
    spacing: int | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    clock: Clock = "header"
    device: str = "cpu"


@dataclass
class Plan:
    """Where rollouts start and how long they are, in video frames."""

    history: int
    history_used: int
    horizon_chunks: int
    frames_per_chunk: int
    starts: list[int]

    @property
    def horizon_frames(self) -> int:
        return self.horizon_chunks * self.frames_per_chunk


@dataclass
class Rollout:
    """One start point: the prediction and its scores.

    Attributes:
        predicted: uint8 ``[horizon_frames, H, W, 3]``.
    """

    index: int
    start: int
    seed: int
    predicted: np.ndarray
    model: RolloutScores
    baseline: RolloutScores


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astra-eval",
        description="Replay a rosbag through an Astra world model and score its predictions against the recording.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap / .db3 file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--checkpoint", type=Path, help="Astra model folder (default: the shipped demo model)")
    parser.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="sensor_msgs/Image topic")
    parser.add_argument(
        "--action-topic",
        action="append",
        metavar="MODALITY=TOPIC",
        help="action topic per model modality (twist, joints, camera_pose), repeatable; default: the "
        "model's modalities on the node's topics (/cmd_vel, /joint_command, /camera_pose_cmd, as astra-datagen "
        "records them) found in the bag",
    )
    parser.add_argument("--joint-names", help="comma-separated joint order (default: the model's joint labels)")
    parser.add_argument("--rollouts", type=int, default=8, help="number of rollouts (start points)")
    parser.add_argument("--history", type=int, help="seed frames before each start (default: 1 + one chunk)")
    parser.add_argument("--horizon", type=int, default=2, help="chunks rolled out per start")
    parser.add_argument("--spacing", type=int, help="frames between starts (default: spread over the bag)")
    parser.add_argument("--seed", type=int, default=0, help="rollout i uses seed + i")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, help="action-free guidance scale (default: the model's)")
    parser.add_argument(
        "--clock", choices=["header", "log"], default="header", help="message times: header stamps or log times"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    return parser


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    return EvalOptions(
        bag=args.bag,
        out=args.out,
        checkpoint=args.checkpoint,
        image_topic=args.image_topic,
        action_topics=parse_action_topics(args.action_topic) if args.action_topic else None,
        joint_names=[n.strip() for n in args.joint_names.split(",") if n.strip()] if args.joint_names else None,
        rollouts=args.rollouts,
        history=args.history,
        horizon=args.horizon,
        spacing=args.spacing,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        clock=args.clock,
        device=args.device,
    )


def parse_action_topics(items: Sequence[str]) -> dict[str, str]:
    """``["twist=/cmd_vel", ...]`` -> ``{"twist": "/cmd_vel"}``."""
    topics: dict[str, str] = {}
    for item in items:
        modality, sep, topic = item.partition("=")
        if not sep or not topic or modality not in MODALITIES:
            known = ", ".join(MODALITIES)
            raise EvalError(f"--action-topic {item!r}: expected MODALITY=TOPIC with MODALITY one of {known}")
        if modality in topics:
            raise EvalError(f"--action-topic: modality {modality!r} given twice")
        topics[modality] = topic
    return topics


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for a bag, model or settings problem)."""
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(options_from_args(args))
    except (BagError, EvalError, CheckpointError) as err:
        print(f"astra-eval: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(report))
    return 0


# --- evaluation -----------------------------------------------------------------------------------


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Run the whole evaluation and write every output; returns the report (as in ``report.json``)."""
    check_settings(options)
    checkpoint = resolve_checkpoint(options.checkpoint)
    config = read_config(checkpoint)
    action_topics = resolve_action_topics(options, config)
    joint_names = resolve_joint_names(options, config, action_topics)
    episode, read_warnings = load_episode(options, action_topics, joint_names)
    check_episode(episode, config, options, action_topics)
    plan = plan_rollouts(episode, config, options)
    notes = [*read_warnings, *plan_notes(plan, options)]
    for note in notes:  # now, not only in the summary: the rollouts may take a while
        print(f"astra-eval: warning: {note}", file=sys.stderr)
    options.out.mkdir(parents=True, exist_ok=True)
    if (options.out / OUTPUT_BAG).exists():
        raise EvalError(f"{options.out / OUTPUT_BAG} exists already; choose a new --out or remove it")

    model = AstraWorldModel.from_pretrained(checkpoint, device=options.device)
    lpips_fn, lpips_status = load_lpips()
    started = time.perf_counter()
    rollouts = run_rollouts(model, episode, plan, options, lpips_fn)
    elapsed = time.perf_counter() - started

    report = build_report(options, config, checkpoint, action_topics, joint_names, episode, plan, rollouts, notes)
    report["lpips"] = lpips_status
    report["timing"] = {"rollouts_s": elapsed, "predicted_frames_per_s": plan.horizon_frames * len(rollouts) / elapsed}
    write_outputs(report, options, episode, rollouts)
    return report


def check_settings(options: EvalOptions) -> None:
    """Refuse counts below 1 (None means the default)."""
    counts = {
        "--rollouts": options.rollouts,
        "--horizon": options.horizon,
        "--history": options.history,
        "--spacing": options.spacing,
        "--steps": options.steps,
    }
    for name, value in counts.items():
        if value is not None and value < 1:
            raise EvalError(f"{name} must be >= 1, got {value}")


def resolve_checkpoint(checkpoint: Path | None) -> Path:
    """The model folder to use; the shipped demo model when none is given."""
    if checkpoint is not None:
        return checkpoint
    demo = demo_model_path()
    if not (demo / "config.json").is_file():
        raise EvalError(f"no demo model is shipped at {demo}; pass --checkpoint MODEL_DIR (an Astra model folder)")
    return demo


def resolve_action_topics(options: EvalOptions, config: AstraConfig) -> dict[str, str]:
    """Modality -> topic: the given ones (checked against the model), else the defaults found in the bag."""
    if options.action_topics is not None:
        found = _given_action_topics(options, config)
    else:
        found = _default_action_topics(options, config)
    try:
        world_of(found, config)
    except ValueError as err:
        raise EvalError(f"{err}; pick one world's topics with --action-topic MODALITY=TOPIC") from err
    return found


def _given_action_topics(options: EvalOptions, config: AstraConfig) -> dict[str, str]:
    unknown = [m for m in options.action_topics if m not in config.modalities]
    if unknown:
        raise EvalError(f"the model takes no {unknown[0]!r} actions; it takes {', '.join(config.modalities)}")
    return dict(options.action_topics)


def _default_action_topics(options: EvalOptions, config: AstraConfig) -> dict[str, str]:
    topics = bag_topics(options.bag)
    defaults = {m: DEFAULT_ACTION_TOPICS[m] for m in config.modalities if m in DEFAULT_ACTION_TOPICS}
    found = {
        modality: topic
        for modality, topic in defaults.items()
        if normalize_type_name(topics.get(topic, "")) in ACTION_MSG_TYPES[modality]
    }
    if not found:
        listing = ", ".join(f"{t} ({m})" for t, m in topics.items()) or "none"
        raise EvalError(
            f"bag {options.bag}: none of the default action topics ({', '.join(defaults.values())}) is in the "
            "bag with a matching type; pass "
            f"--action-topic MODALITY=TOPIC (model modalities: {', '.join(config.modalities)}; bag topics: {listing})"
        )
    return found


def resolve_joint_names(
    options: EvalOptions, config: AstraConfig, action_topics: Mapping[str, str]
) -> list[str] | None:
    """Joint order of the ``joints`` action: ``--joint-names`` or the model's labels; None when unused."""
    if "joints" not in action_topics:
        return None
    names = options.joint_names or config.action_labels.get("joints")
    if not names:
        raise EvalError("the joints action needs --joint-names (the model has no joint labels)")
    if len(names) != config.modalities["joints"]:
        raise EvalError(f"{len(names)} joint names given, the model's joints action has {config.modalities['joints']}")
    return list(names)


def load_episode(
    options: EvalOptions, action_topics: Mapping[str, str], joint_names: Sequence[str] | None
) -> tuple[Episode, list[str]]:
    """The episode and read_episode's warnings (skipped messages, clock mismatches) as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        episode = read_episode(options.bag, options.image_topic, action_topics, joint_names, clock=options.clock)
    return episode, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def check_episode(
    episode: Episode, config: AstraConfig, options: EvalOptions, action_topics: Mapping[str, str]
) -> None:
    """Refuse frames the model cannot take and actions of the wrong width."""
    height, width = episode.frames.shape[1:3]
    multiple = 2 * config.spatial_ratio
    if height % multiple or width % multiple:
        raise BagError(
            f"bag {options.bag}: frames on {options.image_topic!r} are {height}x{width} px (HxW); this model "
            f"needs sides that are multiples of {multiple} px"
        )
    for modality, values in episode.actions.items():
        if values.shape[1] != config.modalities[modality]:
            raise EvalError(
                f"{modality} actions from {action_topics[modality]!r} have {values.shape[1]} values, "
                f"the model expects {config.modalities[modality]}"
            )


def plan_rollouts(episode: Episode, config: AstraConfig, options: EvalOptions) -> Plan:
    """Start frames for the rollouts (see the module docstring)."""
    fpc = config.frames_per_chunk
    history = options.history if options.history is not None else 1 + fpc
    horizon_frames = options.horizon * fpc
    frames = len(episode.frames)
    if frames < history + horizon_frames:
        raise BagError(
            f"bag {options.bag}: too few frames on {options.image_topic!r}: {frames} usable, need "
            f"{history + horizon_frames} ({history} history + {options.horizon} chunk(s) × {fpc} frames); "
            "use a longer bag or a shorter --history / --horizon"
        )
    used = 1 + config.temporal_ratio * ((history - 1) // config.temporal_ratio)
    starts = _start_frames(history, frames - horizon_frames, horizon_frames, options.rollouts, options.spacing)
    return Plan(history, used, options.horizon, fpc, starts)


def _start_frames(first: int, last: int, horizon_frames: int, count: int, spacing: int | None) -> list[int]:
    if spacing is not None:
        return list(range(first, last + 1, spacing))[:count]
    count = min(count, (last - first) // horizon_frames + 1)  # that many non-overlapping windows fit
    if count == 1:
        return [first]
    # Integer division keeps every gap >= horizon_frames, which rounding could break by one frame.
    return [first + i * (last - first) // (count - 1) for i in range(count)]


def plan_notes(plan: Plan, options: EvalOptions) -> list[str]:
    notes = []
    if len(plan.starts) < options.rollouts:
        notes.append(
            f"{len(plan.starts)} rollout(s) instead of {options.rollouts}: no more start points fit the bag "
            f"({'at --spacing ' + str(options.spacing) if options.spacing else 'without overlapping predictions'})"
        )
    if plan.history_used != plan.history:
        notes.append(f"the model seeds with {plan.history_used} of the {plan.history} history frames (1 + 4k)")
    return notes


def run_rollouts(
    model: AstraWorldModel, episode: Episode, plan: Plan, options: EvalOptions, lpips_fn: LpipsFn | None
) -> list[Rollout]:
    """Roll out from every start, scoring the model and the copy-last-frame baseline."""
    rollouts = []
    with tqdm(total=len(plan.starts) * plan.horizon_chunks, desc="rolling out", unit="chunk") as progress:
        for index, start in enumerate(plan.starts):
            seed = options.seed + index
            predicted = predict(model, episode, start, plan, options, seed, progress)
            recorded = episode.frames[start : start + plan.horizon_frames]
            last_seed = episode.frames[start - 1]
            baseline = np.repeat(last_seed[None], len(recorded), axis=0)
            model_scores = score_rollout(predicted, recorded, last_seed, plan.frames_per_chunk, lpips_fn)
            baseline_scores = score_rollout(baseline, recorded, last_seed, plan.frames_per_chunk, lpips_fn)
            rollouts.append(Rollout(index, start, seed, predicted, model_scores, baseline_scores))
    return rollouts


def predict(
    model: AstraWorldModel, episode: Episode, start: int, plan: Plan, options: EvalOptions, seed: int, progress: tqdm
) -> np.ndarray:
    """Open-loop prediction of frames ``[start, start + horizon_frames)``: uint8 ``[N, H, W, 3]``."""
    made_by = np.clip(np.arange(start - plan.history, start) - 1, 0, None)  # the command at t - 1 made frame t
    commands = {m: values[made_by] for m, values in episode.actions.items()}
    session = model.start(episode.frames[start - plan.history : start], seed=seed, commands=commands)
    chunks = []
    for chunk in range(plan.horizon_chunks):
        lo = start + chunk * plan.frames_per_chunk - 1  # frame t is produced by the command at frame t - 1
        actions = {m: values[lo : lo + plan.frames_per_chunk] for m, values in episode.actions.items()}
        chunks.append(session.step(actions or None, guidance_scale=options.guidance, steps=options.steps))
        progress.update()
    return np.concatenate(chunks)


# --- report ---------------------------------------------------------------------------------------


def build_report(
    options: EvalOptions,
    config: AstraConfig,
    checkpoint: Path,
    action_topics: Mapping[str, str],
    joint_names: Sequence[str] | None,
    episode: Episode,
    plan: Plan,
    rollouts: Sequence[Rollout],
    notes: Sequence[str],
) -> dict[str, Any]:
    """The report dictionary (layout: module docstring); files are filled in by :func:`write_outputs`."""
    times = episode.frame_times_ns
    duration = float(times[-1] - times[0]) / _NS_PER_S
    model_scale = guidance_scale_of(dict.fromkeys(action_topics), config)
    return {
        "bag": str(options.bag),
        "out": str(options.out),
        "checkpoint": str(checkpoint),
        "image_topic": options.image_topic,
        "action_topics": dict(action_topics),
        "joint_names": list(joint_names) if joint_names else None,
        "clock": options.clock,
        "episode": {
            "frames": len(episode.frames),
            "frame_size": list(episode.frames.shape[1:3]),
            "duration_s": duration,
            "fps": (len(times) - 1) / duration if duration > 0 else 0.0,
            "skipped": dict(episode.skipped),
        },
        "settings": {
            "rollouts_requested": options.rollouts,
            "history_frames": plan.history,
            "history_frames_used": plan.history_used,
            "horizon_chunks": plan.horizon_chunks,
            "frames_per_chunk": plan.frames_per_chunk,
            "spacing_frames": options.spacing,
            "seed": options.seed,
            "steps": options.steps or config.sampler.steps,
            "guidance": options.guidance if options.guidance is not None else model_scale,
            "device": options.device,
        },
        "warnings": list(notes),
        "metrics": {name: METRIC_INFO[name] for name in CHUNK_METRICS if name in rollouts[0].model.per_chunk},
        "summary": {who: _summary(rollouts, who) for who in (MODEL, BASELINE)},
        "per_chunk": {who: aggregate([getattr(r, who).per_chunk for r in rollouts]) for who in (MODEL, BASELINE)},
        "per_frame": {who: aggregate([getattr(r, who).per_frame for r in rollouts]) for who in (MODEL, BASELINE)},
        "rollouts": [_rollout_entry(r, times) for r in rollouts],
        "predicted_topic": PREDICTED_TOPIC,
    }


def _summary(rollouts: Sequence[Rollout], who: str) -> dict[str, float]:
    names = [name for name in CHUNK_METRICS if name in rollouts[0].model.per_chunk]
    return {name: float(np.mean([getattr(r, who).mean(name) for r in rollouts])) for name in names}


def _rollout_entry(rollout: Rollout, times: np.ndarray) -> dict[str, Any]:
    def lists(scores: RolloutScores) -> dict[str, dict[str, list[float]]]:
        return {
            "per_frame": {k: v.tolist() for k, v in scores.per_frame.items()},
            "per_chunk": {k: v.tolist() for k, v in scores.per_chunk.items()},
        }

    return {
        "index": rollout.index,
        "start_frame": rollout.start,
        "start_time_ns": int(times[rollout.start]),
        "start_time_s": float(times[rollout.start] - times[0]) / _NS_PER_S,
        "seed": rollout.seed,
        "score_psnr": rollout.model.mean("psnr"),
        MODEL: lists(rollout.model),
        BASELINE: lists(rollout.baseline),
    }


def ranked_rollouts(rollouts: Sequence[Rollout]) -> dict[str, Rollout]:
    """Worst, median and best rollout by the model's mean PSNR (ties: lower index first)."""
    order = sorted(rollouts, key=lambda r: (r.model.mean("psnr"), r.index))
    return {"worst": order[0], "median": order[(len(order) - 1) // 2], "best": order[-1]}


def write_outputs(report: dict[str, Any], options: EvalOptions, episode: Episode, rollouts: Sequence[Rollout]) -> None:
    """Videos, output bag, plots, then report.json and report.md (which list the others)."""
    out = options.out
    fps = float(np.clip(report["episode"]["fps"] or 10.0, 1.0, 30.0))
    report["videos"] = {}
    for label, rollout in ranked_rollouts(rollouts).items():
        name = f"video_{label}.mp4"
        recorded = episode.frames[rollout.start : rollout.start + len(rollout.predicted)]
        write_video(recorded, rollout.predicted, out / name, fps, f"{label}: rollout {rollout.index}")
        report["videos"][label] = {"rollout": rollout.index, "file": name, "psnr": rollout.model.mean("psnr")}
    report["output_bag"] = _export(report, options, episode, rollouts)
    report["plots"] = write_plots(report, out)
    write_json(report, out / "report.json")
    write_markdown(report, out / "report.md")


def _export(report: dict[str, Any], options: EvalOptions, episode: Episode, rollouts: Sequence[Rollout]) -> str | None:
    """Write the output bag; a bag that cannot be copied (ROS 1) only costs this output, with a warning."""
    predicted = [
        (int(episode.frame_times_ns[r.start + k]), frame) for r in rollouts for k, frame in enumerate(r.predicted)
    ]
    try:
        export_bag(options.bag, options.out / OUTPUT_BAG, options.image_topic, predicted, clock=options.clock)
    except BagError as err:
        report["warnings"].append(f"output bag not written: {err}")
        return None
    return OUTPUT_BAG


def format_summary(report: Mapping[str, Any]) -> str:
    """The summary printed at the end of a run."""
    episode, settings = report["episode"], report["settings"]
    lines = [
        f"astra-eval: {report['bag']}: {episode['frames']} frames {episode['frame_size'][0]}x{episode['frame_size'][1]}"
        f" px, {episode['duration_s']:.2f} s; model {report['checkpoint']}",
        f"  {len(report['rollouts'])} rollout(s) × {settings['horizon_chunks']} chunk(s) × "
        f"{settings['frames_per_chunk']} frames, seeded with {settings['history_frames_used']} frames "
        f"({report['timing']['predicted_frames_per_s']:.2f} predicted frames/s)",
    ]
    skipped = episode["skipped"]
    lines.append("  skipped messages: " + (", ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped else "none"))
    lines += [f"  warning: {text}" for text in report["warnings"]]
    lines.append(f"  {'metric':<26}{'world model':>14}{'copy last':>14}")
    for metric, value in report["summary"][MODEL].items():
        lines.append(f"  {metric_title(metric):<26}{value:>14.3f}{report['summary'][BASELINE][metric]:>14.3f}")
    lines.append(f"  lpips: {report['lpips']}")
    videos = ", ".join(f"{label} #{v['rollout']} ({v['psnr']:.2f} dB)" for label, v in report["videos"].items())
    lines.append(f"  rollouts by model PSNR: {videos}")
    lines.append(f"  wrote {Path(report['out']) / 'report.md'} (+ report.json, plots, videos, {report['output_bag']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
