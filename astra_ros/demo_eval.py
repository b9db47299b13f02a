"""`python -m astra_ros.demo_eval`: how good is a world model on the demo worlds' held-out seeds?

For each domain, on seeds never used in training:

- **Horizon quality**: start the model from 5 true frames, feed the simulator's commands for
  `--chunks` chunks, and score PSNR / SSIM of each chunk's predicted frames against the simulator's,
  next to the copy-last-frame baseline (the last seed frame repeated). `psnr` pools the squared error
  of every frame at a horizon (`10 log10(255^2 / mean MSE)`); `frame_psnr` is the mean of per-frame
  PSNRs, which a single frame the world left unchanged (copy-last: MSE 0, capped at 100 dB) dominates.
  The `vae` row scores the model's VAE reconstructing the true frames (seed and future encoded and
  decoded as one stream, anchored like the rollout in a fixed camera's world): no prediction decoded
  by that VAE can expect to do better.
- **Action following**: from one true state, roll two different command sequences in both the
  simulator and the model (a fork of one session, sharing noise). The pair is followed when each
  prediction is closer (MSE) to its own true rollout than to the other one; the fraction comes with its
  95% Wilson interval (`action_following_ci95`). `action_pairs.png` shows each domain's first pair.
  `pair_response` says how strongly the model reacts to the change of commands: the mean MSE between
  its two predictions over the mean MSE between the two true rollouts (0: the commands change
  nothing; about 1: as much as in the world, though not necessarily alike).
  A model that blurs its movers has a small response, and then both of its predictions often sit
  nearer the same true rollout, which the fraction followed cannot tell from a wrong reaction.

    python -m astra_ros.demo_eval --checkpoint runs/demo/astra/final --out runs/demo/eval
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import binomtest
from tqdm import tqdm

from astra_model import AstraWorldModel
from astra_model.anchoring import Anchor
from astra_model.vae import VAEStream, frames_to_video, video_to_frames
from astra_model.worlds import fixed_camera_of

from .envs import DOMAINS, make_env
from .eval_metrics import PSNR_CAP_DB, psnr, ssim

SEED_FRAMES = 5  # 1 + 4: two latent frames of true context
HELD_OUT_SEED = 50_000  # datagen's training and validation seeds stay far below this


def _true_rollout(env, actions: np.ndarray) -> np.ndarray:
    return np.stack([env.step(a) for a in actions])


def _seed_context(env, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seed frames `[5, H, W, 3]` from a fresh reset and the commands that produced them `[5, D]` (row t
    made frame t; row 0, which made nothing, repeats row 1 as `astra_model.data.produced_by` does)."""
    frames = [env.reset()]
    warmup = env.sample_actions(SEED_FRAMES, rng)
    frames += [env.step(a) for a in warmup[:-1]]
    return np.stack(frames), np.concatenate([warmup[:1], warmup[:-1]])


@dataclass
class Sampling:
    """How the model is run in an evaluation; None keeps the model's sampler defaults.

    Attributes:
        seed_commands: give the model the commands that produced the seed frames, as a robot that
            recorded them would (else the seed frames' commands are unknown to it).
    """

    steps: int | None = None
    guidance_scale: float | None = None
    seed_commands: bool = True

    def start(self, model: AstraWorldModel, context: np.ndarray, modality: str, commands: np.ndarray, seed: int):
        return model.start(context, seed=seed, commands={modality: commands} if self.seed_commands else None)

    def step_options(self) -> dict:
        return {"steps": self.steps, "guidance_scale": self.guidance_scale}


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


@torch.no_grad()
def reconstruction(
    model: AstraWorldModel, context: np.ndarray, truth: np.ndarray, modality: str | None = None
) -> np.ndarray:
    """The model VAE's reconstruction `[T, H, W, 3]` of `truth`, encoded and decoded in one stream after
    `context` as a rollout's frames are, and shown as a rollout commanded by `modality` shows them
    (anchored to the last context frame in a fixed camera's world)."""
    stream = VAEStream(model.vae)
    video = frames_to_video(torch.from_numpy(np.concatenate([context, truth]))[None]).to(model.device)
    recon = stream.decode(stream.encode(video))
    last, future = len(context) - 1, recon[:, :, len(context) :]
    world = fixed_camera_of([modality] if modality else None, model.config)
    if world is not None:
        anchor = Anchor(video[:, :, last : last + 1], recon[:, :, last : last + 1])
        future = anchor.apply(future, world.anchor_tolerance)
    return video_to_frames(future)[0].cpu().numpy()


def horizon_scores(
    model: AstraWorldModel, domain: str, seed: int, chunks: int, size: int, sampling: Sampling
) -> dict[str, list[float]]:
    n = model.config.frames_per_chunk
    with make_env(domain, seed=seed, image_size=size) as env:
        rng = np.random.default_rng(seed)
        context, commands = _seed_context(env, rng)
        actions = env.sample_actions(chunks * n, rng)
        truth = _true_rollout(env, actions)
    session = sampling.start(model, context, env.modality, commands, seed)
    plan = [{env.modality: actions[c * n : (c + 1) * n]} for c in range(chunks)]
    pred = np.concatenate([session.step(chunk, **sampling.step_options()) for chunk in plan])
    copy = np.repeat(context[-1:], len(truth), axis=0)
    rows = {"model": pred, "copy": copy, "vae": reconstruction(model, context, truth, env.modality)}
    out: dict[str, list[float]] = {f"{m}_{k}": [] for m in rows for k in ("mse", "frame_psnr", "ssim")}
    for c in range(chunks):
        span = slice(c * n, (c + 1) * n)
        for name, frames in rows.items():
            pairs = list(zip(frames[span], truth[span], strict=True))
            out[f"{name}_mse"].append(_mse(frames[span], truth[span]))
            out[f"{name}_frame_psnr"].append(float(np.mean([psnr(p, t) for p, t in pairs])))
            out[f"{name}_ssim"].append(float(np.mean([ssim(p, t) for p, t in pairs])))
    return out


@dataclass
class ActionPair:
    """Two command sequences run from one true state: true and predicted frames, each `[2, n, H, W, 3]`."""

    truths: np.ndarray
    preds: np.ndarray

    def followed(self) -> bool:
        """Each prediction is closer (MSE) to its own true rollout than to the other one."""
        return all(_mse(self.preds[i], self.truths[i]) < _mse(self.preds[i], self.truths[1 - i]) for i in (0, 1))

    def spreads(self) -> tuple[float, float]:
        """(MSE between the two predictions, MSE between the two true rollouts)."""
        return _mse(self.preds[0], self.preds[1]), _mse(self.truths[0], self.truths[1])


def action_pair(
    model: AstraWorldModel, domain: str, seed: int, size: int, sampling: Sampling, chunks: int = 1
) -> ActionPair:
    n = model.config.frames_per_chunk * chunks
    with make_env(domain, seed=seed, image_size=size) as env:
        context, commands = _seed_context(env, np.random.default_rng(seed))
        start = env.state()
        plans = [env.sample_actions(n, np.random.default_rng(seed * 7 + k)) for k in (1, 2)]
        truths = []
        for plan in plans:
            env.set_state(start)
            truths.append(_true_rollout(env, plan))
    session = sampling.start(model, context, env.modality, commands, seed).fork(2)
    per_chunk = model.config.frames_per_chunk
    preds = [
        session.step({env.modality: np.stack(plans)[:, k : k + per_chunk]}, **sampling.step_options())
        for k in range(0, n, per_chunk)
    ]
    return ActionPair(np.stack(truths), np.concatenate(preds, axis=1))


def following(results: list[ActionPair]) -> dict[str, Any]:
    """How many pairs the model followed, with the interval, and how strongly it responded."""
    followed = sum(r.followed() for r in results)
    predicted, true = np.mean([r.spreads() for r in results], axis=0)
    return {
        "action_following": followed / len(results),
        "pairs_followed": followed,
        "pairs": len(results),
        "action_following_ci95": following_interval(followed, len(results)),
        "pair_prediction_mse": round(float(predicted), 4),
        "pair_truth_mse": round(float(true), 4),
        "pair_response": round(float(predicted / max(true, 1e-12)), 4),
    }


def pair_figure(examples: dict[str, ActionPair]) -> Figure:
    """Per domain, the simulator and the model under each of two command sequences, frames left to right."""
    figure = Figure(figsize=(8, 1.1 * 4 * len(examples)), layout="constrained")
    axes = figure.subplots(4 * len(examples), 1, squeeze=False)[:, 0]
    rows = [(d, who, k) for d in examples for k in (0, 1) for who in ("simulator", "model")]
    for ax, (domain, who, k) in zip(axes, rows, strict=True):
        frames = (examples[domain].truths if who == "simulator" else examples[domain].preds)[k]
        ax.imshow(np.concatenate(list(frames), axis=1))
        ax.set_axis_off()
        ax.set_title(f"{domain}, commands {'AB'[k]}: {who}", fontsize=8, loc="left")
    return figure


def following_interval(followed: int, pairs: int, confidence: float = 0.95) -> list[float]:
    """Wilson score interval of the fraction of pairs followed: with 20 pairs, 15 followed is consistent
    with anything from about 53% to 89%, which the bare fraction does not say."""
    ci = binomtest(followed, pairs).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def _pooled_psnr(mse: np.ndarray) -> list[float]:
    """PSNR (dB) of mean squared errors, capped like the per-frame PSNR."""
    return np.minimum(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10)), PSNR_CAP_DB).round(4).tolist()


def evaluate(
    model: AstraWorldModel,
    episodes: int,
    chunks: int,
    pairs: int,
    size: int,
    first_seed: int,
    sampling: Sampling,
    domains: tuple[str, ...] = DOMAINS,
    pair_chunks: int = 1,
) -> tuple[dict, dict[str, ActionPair]]:
    """The report (JSON-ready) and each domain's first action pair. Pairs are scored twice: started
    with the commands that made the seed frames, as a recording gives them, and without them, as the
    node starts from a seed image (`without_seed_commands`)."""
    report, examples = {}, {}
    for domain in domains:
        seeds = range(first_seed, first_seed + episodes)
        runs = [
            horizon_scores(model, domain, s, chunks, size, sampling) for s in tqdm(seeds, desc=f"{domain} horizons")
        ]
        table = {k: np.mean([r[k] for r in runs], axis=0).round(4).tolist() for k in runs[0]}
        for name in ("model", "copy", "vae"):
            table[f"{name}_psnr"] = _pooled_psnr(np.mean([r[f"{name}_mse"] for r in runs], axis=0))
        pair_seeds = range(first_seed + 1000, first_seed + 1000 + pairs)
        scored = {}
        for given in (True, False):
            start = replace(sampling, seed_commands=given)
            desc = f"{domain} pairs{'' if given else ' without seed commands'}"
            scored[given] = [
                action_pair(model, domain, s, size, start, pair_chunks) for s in tqdm(pair_seeds, desc=desc)
            ]
        examples[domain] = scored[True][0]
        beats = [m > c for m, c in zip(table["model_psnr"], table["copy_psnr"], strict=True)]
        report[domain] = {
            **table,
            "beats_copy_psnr_at_horizon": beats,
            "pair_chunks": pair_chunks,
            **following(scored[True]),
            "without_seed_commands": following(scored[False]),
        }
    return report, examples


def markdown(report: dict) -> str:
    lines = [
        "| domain | horizon (chunks) | model PSNR | copy-last PSNR | VAE PSNR | model frame PSNR "
        "| copy-last frame PSNR | VAE frame PSNR | model SSIM | copy-last SSIM | VAE SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for domain, r in report.items():
        columns = [r[f"{row}_{k}"] for k in ("psnr", "frame_psnr", "ssim") for row in ("model", "copy", "vae")]
        for h, values in enumerate(zip(*columns, strict=True), start=1):
            cells = [f"{v:.2f}" for v in values[:6]] + [f"{v:.3f}" for v in values[6:]]
            lines.append(f"| {domain} | {h} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| domain | start | action following (pairs followed) | 95% interval (Wilson) "
        "| MSE between the two predictions | MSE between the two true rollouts | response |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {d} | {start} | {f['action_following']:.0%} ({f['pairs_followed']} of {f['pairs']}) "
        f"| {f['action_following_ci95'][0]:.0%}-{f['action_following_ci95'][1]:.0%} "
        f"| {f['pair_prediction_mse']:.1f} | {f['pair_truth_mse']:.1f} | {f['pair_response']:.3f} |"
        for d, r in report.items()
        for start, f in (("seed commands given", r), ("no seed commands", r["without_seed_commands"]))
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a world model on the demo worlds' held-out seeds.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=8, help="held-out episodes per domain")
    parser.add_argument("--chunks", type=int, default=4, help="horizon in chunks")
    parser.add_argument("--pairs", type=int, default=20, help="action-following pairs per domain")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS), help="worlds to evaluate")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=HELD_OUT_SEED,
        help=f"first horizon seed (pairs start 1000 later); the held-out set is {HELD_OUT_SEED}, use another "
        "range (e.g. 40000) to tune sampler settings without touching it",
    )
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (model default if omitted)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="AFG scale (model default if omitted)")
    parser.add_argument("--pair-chunks", type=int, default=1, help="chunks each action pair is rolled out for")
    args = parser.parse_args(argv)
    model = AstraWorldModel.from_pretrained(args.checkpoint)
    sampling = Sampling(args.steps, args.guidance_scale)
    if args.pairs < 1 or args.pair_chunks < 1:
        parser.error("--pairs and --pair-chunks must be at least 1")
    size = args.image_size
    report, examples = evaluate(
        model,
        args.episodes,
        args.chunks,
        args.pairs,
        size,
        args.first_seed,
        sampling,
        tuple(args.domains),
        args.pair_chunks,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_eval.json").write_text(json.dumps(report, indent=2))
    (out / "demo_eval.md").write_text(markdown(report))
    pair_figure(examples).savefig(out / "action_pairs.png", dpi=100)
    print(markdown(report))


if __name__ == "__main__":
    main()
