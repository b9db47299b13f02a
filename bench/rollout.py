"""Rollout speed of the tiny preset on this machine's CPU, measured side by side in one run.

Reports per mode (full attention; block-causal without and with the history KV cache):
chunk latency (median over chunks, VAE decode included) and frames/s; and the denoiser's achieved
FLOP/s (FLOPs counted by torch's FlopCounterMode) against a large fp32 matmul timed in the same run.

    .venv/bin/python bench/rollout.py [--chunks 6] [--size 64] [--out bench/results/rollout.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from astra_model import AstraConfig, AstraWorldModel, KVCache


def timed(fn, repeats: int) -> float:
    """Median wall time of `fn()` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / timed(lambda: torch.mm(a, b), repeats)


def rollout_latency(model: AstraWorldModel, frames: np.ndarray, chunks: int, use_cache: bool) -> float:
    session = model.start(frames, seed=0)
    actions = {"twist": np.zeros((model.config.frames_per_chunk, 6), np.float32)}
    for _ in range(model.config.history.capacity // model.config.chunk_latent_frames + 1):
        session.step(actions, use_kv_cache=use_cache)  # fill the history memory first
    return timed(lambda: session.step(actions, use_kv_cache=use_cache), chunks)


def denoiser_flops(model: AstraWorldModel, size: int, use_cache: bool) -> tuple[float, float]:
    """(FLOPs, seconds) of one denoiser call at a full history, as a rollout makes it."""
    cfg = model.config
    lat = size // cfg.spatial_ratio
    x = torch.randn(2, cfg.latent_channels, cfg.chunk_latent_frames, lat, lat)
    t = torch.full((2,), 500.0)
    hist = torch.randn(2, cfg.latent_channels, cfg.history.capacity, lat, lat)
    acts = {"twist": torch.zeros(2, cfg.frames_per_chunk, 6)}
    cache = KVCache() if use_cache else None

    def call():
        return model(x, t, acts, hist, kv_cache=cache)

    with torch.no_grad():
        call()  # fills the cache when used
        with FlopCounterMode(display=False) as counter:
            call()
        return counter.get_total_flops(), timed(call, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--out", default="bench/results/rollout.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    frames = (np.random.default_rng(0).random((5, args.size, args.size, 3)) * 255).astype(np.uint8)

    matmul = matmul_flops_per_s()
    rows = []
    for attention, use_cache in (("full", False), ("block_causal", False), ("block_causal", True)):
        model = AstraWorldModel(AstraConfig.preset("tiny").replace(attention=attention)).eval()
        latency = rollout_latency(model, frames, args.chunks, use_cache)
        flops, seconds = denoiser_flops(model, args.size, use_cache)
        rows.append(
            {
                "attention": attention,
                "kv_cache": use_cache,
                "chunk_latency_s": latency,
                "frames_per_s": model.config.frames_per_chunk / latency,
                "denoiser_call_s": seconds,
                "denoiser_gflop_per_call": flops / 1e9,
                "denoiser_gflop_per_s": flops / seconds / 1e9,
                "fraction_of_matmul_flop_per_s": flops / seconds / matmul,
            }
        )
    base = rows[1]["chunk_latency_s"]
    for row in rows:
        row["speedup_vs_block_causal_uncached"] = base / row["chunk_latency_s"]

    cfg = AstraConfig.preset("tiny")
    result = {
        "preset": "tiny",
        "frame_size": args.size,
        "frames_per_chunk": cfg.frames_per_chunk,
        "denoising_steps": cfg.sampler.steps,
        "guidance_scale": cfg.sampler.guidance_scale,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "matmul_2048_gflop_per_s": matmul / 1e9,
        "modes": rows,
    }
    print(
        f"tiny preset, {args.size}x{args.size}, {cfg.frames_per_chunk} frames/chunk, {cfg.sampler.steps} steps, AFG on"
    )
    print(f"reference fp32 matmul 2048^3: {matmul / 1e9:.1f} GFLOP/s")
    print(f"{'mode':<26}{'chunk s':>9}{'frames/s':>10}{'speedup':>9}{'GFLOP/s':>9}{'of matmul':>11}")
    for r in rows:
        name = f"{r['attention']}{' +kv-cache' if r['kv_cache'] else ''}"
        print(
            f"{name:<26}{r['chunk_latency_s']:>9.3f}{r['frames_per_s']:>10.1f}{r['speedup_vs_block_causal_uncached']:>9.2f}"
            f"{r['denoiser_gflop_per_s']:>9.2f}{r['fraction_of_matmul_flop_per_s']:>11.1%}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
