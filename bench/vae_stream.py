"""How a world model's VAE holds up along one long stream, several models side by side.

Rollouts decode a single causal VAE stream for as long as they run. For each demo world and each
model, this encodes and decodes 5 seed frames plus `--frames` true frames of held-out seeds as one
stream (`astra_ros.demo_eval.reconstruction`) and reports the pooled reconstruction PSNR of every
8-frame block after the seed, so a decoder that drifts late in a stream shows as a falling row.

    .venv/bin/python bench/vae_stream.py runs/s7/astra/final astra_ros/demo_model \
        [--frames 72] [--seeds 4] [--out bench/results/vae_stream.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from astra_model import AstraWorldModel
from astra_ros.demo_eval import HELD_OUT_SEED, _seed_context, _true_rollout, reconstruction
from astra_ros.envs import DOMAINS, make_env

BLOCK = 8


def block_psnr(model: AstraWorldModel, domain: str, seeds: range, frames: int) -> list[float]:
    """Pooled PSNR (dB) of each `BLOCK`-frame block of the reconstructed stream after the seed frames."""
    mse = np.zeros(frames // BLOCK)
    for seed in seeds:
        with make_env(domain, seed=seed, image_size=64) as env:
            rng = np.random.default_rng(seed)
            context, _ = _seed_context(env, rng)
            truth = _true_rollout(env, env.sample_actions(frames, rng))
        error = (reconstruction(model, context, truth).astype(np.float64) - truth) ** 2
        mse += error[: len(mse) * BLOCK].reshape(len(mse), -1).mean(axis=1) / len(seeds)
    return (10 * np.log10(255.0**2 / mse)).round(2).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="world model folders")
    parser.add_argument("--frames", type=int, default=72, help="true frames after the 5 seed frames (4k)")
    parser.add_argument("--seeds", type=int, default=4, help="held-out seeds per domain")
    parser.add_argument("--out", default="bench/results/vae_stream.json")
    args = parser.parse_args()
    if args.frames % 4:
        parser.error("--frames must be a multiple of 4 (the VAE's stream takes 1 + 4k frames)")
    seeds = range(HELD_OUT_SEED, HELD_OUT_SEED + args.seeds)
    models = {path: AstraWorldModel.from_pretrained(path) for path in args.models}
    results = {d: {p: block_psnr(m, d, seeds, args.frames) for p, m in models.items()} for d in DOMAINS}
    first = args.models[0]
    for domain, rows in results.items():
        print(f"{domain}: PSNR per {BLOCK}-frame block after the seed frames")
        for path, row in rows.items():
            print(f"  {path}: " + " ".join(f"{v:.2f}" for v in row))
            if path != first:
                gain = np.subtract(row, rows[first])
                print(f"  {'':{len(path)}}  dB over {first}: " + " ".join(f"{v:+.2f}" for v in gain))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"block_frames": BLOCK, "seeds": list(seeds), "psnr": results}, indent=2))


if __name__ == "__main__":
    main()
