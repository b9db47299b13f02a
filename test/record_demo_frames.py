"""Record the shipped demo model's frames for fixed seeds and commands in each world.

    .venv/bin/python test/record_demo_frames.py

writes `test/data/demo_frames.npz`, which `test_demo_frames.py` compares the model against. The seed
frames and commands come from the MuJoCo worlds on held-out seeds and are stored beside the frames, so
the test needs only the model. Regenerate it only when the shipped model is meant to change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from astra_model import AstraWorldModel
from astra_ros import demo_model_path
from astra_ros.envs import make_env

OUT = Path(__file__).resolve().parent / "data" / "demo_frames.npz"
# (world, env seed, give the seed frames' commands)
CASES = (("mobile", 91_001, True), ("arm", 91_002, True), ("camera", 91_003, True), ("camera", 91_004, False))
SEED_FRAMES, CHUNKS = 5, 2


def case_inputs(world: str, seed: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """The world's modality, 5 seed frames, the commands that made them and 2 chunks of commands."""
    with make_env(world, seed=seed, image_size=64) as env:
        rng = np.random.default_rng(seed)
        frames = [env.reset()]
        warmup = env.sample_actions(SEED_FRAMES, rng)
        frames += [env.step(a) for a in warmup[:-1]]
        commands = np.concatenate([warmup[:1], warmup[:-1]])
        return (
            env.modality,
            np.stack(frames),
            commands.astype(np.float32),
            env.sample_actions(16, rng).astype(np.float32),
        )


@torch.no_grad()
def rollout(model: AstraWorldModel, modality: str, seeds, seed_commands, plan, with_commands: bool, seed: int):
    session = model.start(seeds, seed=seed, commands={modality: seed_commands} if with_commands else None)
    n = model.config.frames_per_chunk
    return np.concatenate([session.step({modality: plan[c * n : (c + 1) * n]}) for c in range(CHUNKS)])


def main() -> None:
    model = AstraWorldModel.from_pretrained(demo_model_path()).eval()
    arrays = {}
    for i, (world, seed, with_commands) in enumerate(CASES):
        modality, seeds, seed_commands, plan = case_inputs(world, seed)
        frames = rollout(model, modality, seeds, seed_commands, plan, with_commands, seed)
        arrays |= {
            f"{i}_seeds": seeds,
            f"{i}_seed_commands": seed_commands,
            f"{i}_plan": plan,
            f"{i}_frames": frames,
            f"{i}_meta": np.array([modality, str(seed), str(int(with_commands))]),
        }
        print(world, modality, frames.shape, frames.mean())
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
