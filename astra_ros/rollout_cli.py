"""`astra-rollout`: roll a world model out from a seed image and write the video.

    astra-rollout --out out/rollout.mp4 [--checkpoint DIR] [--seed-image PNG] [--chunks 4]

Without `--checkpoint` it uses the demo model shipped in this package, or where that folder is missing a
fresh tiny model (untrained: the video then shows only what an untrained VAE/denoiser produces).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from astra_model import AstraConfig, AstraWorldModel

from . import demo_model_path


def default_checkpoint() -> Path | None:
    """The shipped demo model folder, if it is there."""
    path = demo_model_path()
    return path if (path / "config.json").is_file() else None


def synthetic_seed(size: int) -> np.ndarray:
    """A deterministic test card: coloured quadrants and a checker floor, uint8 `[size, size, 3]`."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = np.where(x < size // 2, 200, 40)
    img[..., 1] = np.where(y < size // 2, 180, 60)
    img[..., 2] = 120
    floor = y > size * 2 // 3
    img[floor] = np.where(((x[floor] // 8 + y[floor] // 8) % 2)[:, None] == 0, 230, 30)
    return img


def load_model(checkpoint: str | None) -> tuple[AstraWorldModel, str]:
    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if path is not None:
        return AstraWorldModel.from_pretrained(path), str(path)
    torch.manual_seed(0)
    return AstraWorldModel(AstraConfig.preset("tiny")).eval(), "fresh tiny model (untrained)"


def demo_actions(model: AstraWorldModel, chunk: int) -> dict[str, np.ndarray]:
    """A gentle sinusoidal command for the model's first modality, per video frame."""
    name, dim = next(iter(model.config.modalities.items()))
    n = model.config.frames_per_chunk
    t = (chunk * n + np.arange(n, dtype=np.float32))[:, None]
    return {name: (0.5 * np.sin(0.2 * t + np.arange(dim, dtype=np.float32))).astype(np.float32)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Roll out an Astra world model and write the video.")
    parser.add_argument("--checkpoint", help="Astra model folder (save_pretrained layout)")
    parser.add_argument(
        "--seed-image", help="PNG/JPEG to start from (default: the model's seed frame, else a synthetic test card)"
    )
    parser.add_argument("--chunks", type=int, default=4, help="autoregressive steps to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--out", default="out/rollout.mp4")
    args = parser.parse_args(argv)

    model, source = load_model(args.checkpoint)
    if args.seed_image:
        seed = iio.imread(args.seed_image)[..., :3].astype(np.uint8)
    else:
        seed = model.seed_frame if model.seed_frame is not None else synthetic_seed(64)
    session = model.start(seed, seed=args.seed)
    frames = [seed]
    start = time.perf_counter()
    for chunk in tqdm(range(args.chunks), desc="chunks", unit="chunk"):
        frames.extend(session.step(demo_actions(model, chunk)))
    elapsed = time.perf_counter() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    video = np.stack(frames)
    iio.imwrite(out, video, fps=args.fps, codec="libx264", macro_block_size=1)
    strip = np.concatenate(list(video[:: max(1, len(video) // 8)][:8]), axis=1)
    iio.imwrite(out.with_suffix(".png"), strip)
    generated = len(frames) - 1
    print(f"model: {source}")
    print(
        f"generated {generated} frames in {elapsed:.2f} s "
        f"({generated / elapsed:.1f} frames/s, CPU, VAE decode included)"
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
