"""`python -m astra_ros.demo_eval`: how good is a world model on the demo worlds' held-out seeds?

For each domain, on seeds never used in training:

- **Horizon quality**: start the model from 5 true frames, feed the simulator's commands for
  `--chunks` chunks, and score PSNR / SSIM of each chunk's predicted frames against the simulator's,
  next to the copy-last-frame baseline (the last seed frame repeated).
- **Action following**: from one true state, roll two different command sequences in both the
  simulator and the model (a fork of one session, sharing noise). The pair is followed when each
  prediction is closer (MSE) to its own true rollout than to the other one.

    python -m astra_ros.demo_eval --checkpoint runs/demo/astra/final --out runs/demo/eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from astra_model import AstraWorldModel

from .envs import DOMAINS, make_env
from .eval_metrics import psnr, ssim

SEED_FRAMES = 5  # 1 + 4: two latent frames of true context
HELD_OUT_SEED = 50_000  # datagen's training and validation seeds stay far below this


def _true_rollout(env, actions: np.ndarray) -> np.ndarray:
    return np.stack([env.step(a) for a in actions])


def _seed_context(env, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(seed frames `[5, H, W, 3]`, the command issued at the last seed frame) from a fresh reset."""
    frames = [env.reset()]
    warmup = env.sample_actions(SEED_FRAMES, rng)
    frames += [env.step(a) for a in warmup[:-1]]
    return np.stack(frames), warmup[-1]


def horizon_scores(model: AstraWorldModel, domain: str, seed: int, chunks: int, size: int) -> dict[str, list[float]]:
    n = model.config.frames_per_chunk
    with make_env(domain, seed=seed, image_size=size) as env:
        rng = np.random.default_rng(seed)
        context, _ = _seed_context(env, rng)
        actions = env.sample_actions(chunks * n, rng)
        truth = _true_rollout(env, actions)
    session = model.start(context, seed=seed)
    pred = np.concatenate([session.step({env.modality: actions[c * n : (c + 1) * n]}) for c in range(chunks)])
    copy = np.repeat(context[-1:], len(truth), axis=0)
    out: dict[str, list[float]] = {k: [] for k in ("model_psnr", "model_ssim", "copy_psnr", "copy_ssim")}
    for c in range(chunks):
        span = slice(c * n, (c + 1) * n)
        for name, frames in (("model", pred), ("copy", copy)):
            pairs = list(zip(frames[span], truth[span], strict=True))
            out[f"{name}_psnr"].append(float(np.mean([psnr(p, t) for p, t in pairs])))
            out[f"{name}_ssim"].append(float(np.mean([ssim(p, t) for p, t in pairs])))
    return out


def follows_actions(model: AstraWorldModel, domain: str, seed: int, size: int) -> bool:
    n = model.config.frames_per_chunk
    with make_env(domain, seed=seed, image_size=size) as env:
        context, _ = _seed_context(env, np.random.default_rng(seed))
        start = env.state()
        plans = [env.sample_actions(n, np.random.default_rng(seed * 7 + k)) for k in (1, 2)]
        truths = []
        for plan in plans:
            env.set_state(start)
            truths.append(_true_rollout(env, plan))
    preds = model.start(context, seed=seed).fork(2).step({env.modality: np.stack(plans)})

    def mse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((a.astype(np.float64) - b) ** 2))

    return mse(preds[0], truths[0]) < mse(preds[0], truths[1]) and mse(preds[1], truths[1]) < mse(preds[1], truths[0])


def evaluate(model: AstraWorldModel, episodes: int, chunks: int, pairs: int, size: int) -> dict:
    report = {}
    for domain in DOMAINS:
        seeds = range(HELD_OUT_SEED, HELD_OUT_SEED + episodes)
        runs = [horizon_scores(model, domain, s, chunks, size) for s in tqdm(seeds, desc=f"{domain} horizons")]
        table = {k: np.mean([r[k] for r in runs], axis=0).round(4).tolist() for k in runs[0]}
        pair_seeds = range(HELD_OUT_SEED + 1000, HELD_OUT_SEED + 1000 + pairs)
        followed = [follows_actions(model, domain, s, size) for s in tqdm(pair_seeds, desc=f"{domain} pairs")]
        beats = [m > c for m, c in zip(table["model_psnr"], table["copy_psnr"], strict=True)]
        report[domain] = {**table, "beats_copy_psnr_at_horizon": beats, "action_following": float(np.mean(followed))}
    return report


def markdown(report: dict) -> str:
    lines = [
        "| domain | horizon (chunks) | model PSNR | copy-last PSNR | model SSIM | copy-last SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for domain, r in report.items():
        rows = zip(r["model_psnr"], r["copy_psnr"], r["model_ssim"], r["copy_ssim"], strict=True)
        for h, (mp, cp, ms, cs) in enumerate(rows, start=1):
            lines.append(f"| {domain} | {h} | {mp:.2f} | {cp:.2f} | {ms:.3f} | {cs:.3f} |")
    lines += ["", "| domain | action following (pairs followed) |", "|---|---|"]
    lines += [f"| {d} | {r['action_following']:.0%} |" for d, r in report.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a world model on the demo worlds' held-out seeds.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=8, help="held-out episodes per domain")
    parser.add_argument("--chunks", type=int, default=4, help="horizon in chunks")
    parser.add_argument("--pairs", type=int, default=20, help="action-following pairs per domain")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    model = AstraWorldModel.from_pretrained(args.checkpoint)
    report = evaluate(model, args.episodes, args.chunks, args.pairs, args.image_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_eval.json").write_text(json.dumps(report, indent=2))
    (out / "demo_eval.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
