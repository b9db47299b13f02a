"""`python -m astra_ros.datagen`: record demo-world episodes as rosbag2 files (MCAP by default).

Each episode is one bag with the camera on `/camera/image_raw` (sensor_msgs/Image rgb8) and the
commands on the node's topic names (`/cmd_vel`, `/joint_command`, `/camera_pose_cmd`). A command is
stamped at the frame time it was issued and produces the next frame, so frame i+1 is the result of the
command sampled (zero-order hold) at frame i.

`--branches K` also records, per seed, K counterfactual episodes (`seed_<n>_b<k>`): the same world and
the same frames up to a branch frame drawn per seed, then commands sampled afresh from that state.
Within a smooth command stream the next commands are mostly predictable from the motion already on
screen, so a model can predict well while ignoring them; branches show it one history with several
futures that only the commands tell apart.

    python -m astra_ros.datagen --domains mobile arm camera --episodes 24 --frames 81 --out data/train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .bags import DEFAULT_ACTION_TOPICS as ACTION_TOPICS
from .bags import EpisodeWriter
from .envs import DOMAINS, make_env

IMAGE_TOPIC = "/camera/image_raw"
# Episodes start at a fixed epoch so recordings are reproducible byte for byte.
EPOCH_NS = 1_700_000_000 * 10**9
MIN_BRANCHED_FRAMES = 13  # 1 + 4 * 3: a branch frame with history before it and a chunk after it


def branch_frame(seed: int, frames: int) -> int:
    """Index 4 m of the first command a seed's branches resample. It produces frame 4 m + 1, the first
    video frame of latent frame m + 1 (the Wan VAE folds 4 frames into one), so branches part at a
    latent-frame boundary with at least two latent frames before it and a chunk of two after it."""
    if frames < MIN_BRANCHED_FRAMES:
        raise ValueError(f"branches need episodes of at least {MIN_BRANCHED_FRAMES} frames, got {frames}")
    latent_frames = 1 + (frames - 1) // 4
    return 4 * int(np.random.default_rng([seed, 0]).integers(1, latent_frames - 2))


def record_episode(
    domain: str, seed: int, frames: int, image_size: int, path: Path, storage: str, branch: int = 0
) -> None:
    """Roll the `domain` world for `frames` frames from seed `seed` with its own sampled commands.

    `branch` k > 0 keeps the commands of branch 0 before `branch_frame(seed, frames)` and samples the
    rest with a generator of its own, from the state reached there.
    """
    with make_env(domain, seed=seed, image_size=image_size) as env:
        rng = np.random.default_rng(seed)
        actions = env.sample_actions(frames - 1, rng)
        fork = branch_frame(seed, frames) if branch else None
        dt_ns = round(1e9 / env.frame_rate)
        joint_names = env.action_names if env.modality == "joints" else None
        topics = {env.modality: ACTION_TOPICS[env.modality]}
        with EpisodeWriter(
            path, action_topics=topics, storage=storage, image_topic=IMAGE_TOPIC, joint_names=joint_names
        ) as writer:
            frame = env.reset()
            for i in range(frames):
                t_ns = EPOCH_NS + seed * 10**12 + i * dt_ns
                writer.write_frame(t_ns, frame)
                if i == fork:
                    actions[i:] = env.sample_actions(frames - 1 - i, np.random.default_rng([seed, branch]))
                if i < frames - 1:
                    writer.write_action(env.modality, t_ns, actions[i])
                    frame = env.step(actions[i])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record MuJoCo demo-world episodes as rosbag2 files.")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--episodes", type=int, default=8, help="episodes per domain")
    parser.add_argument("--frames", type=int, default=81, help="frames per episode (1 + 4k suits the VAE)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode e uses seed + e")
    parser.add_argument("--branches", type=int, default=0, help="counterfactual episodes per seed (see above)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--out", required=True, help="output folder; bags go to OUT/<domain>/seed_<n>")
    args = parser.parse_args(argv)

    if args.branches < 0:
        parser.error("--branches must be >= 0")
    if args.branches and args.frames < MIN_BRANCHED_FRAMES:
        parser.error(f"--branches needs --frames >= {MIN_BRANCHED_FRAMES} (two latent frames, then a chunk of two)")
    jobs = [(d, args.seed + e, b) for d in args.domains for e in range(args.episodes) for b in range(1 + args.branches)]
    for domain, seed, branch in tqdm(jobs, desc="episodes", unit="bag"):
        path = Path(args.out) / domain / (f"seed_{seed:05d}" + (f"_b{branch}" if branch else ""))
        if path.exists():
            raise SystemExit(f"{path} exists; choose another --out or --seed")
        path.parent.mkdir(parents=True, exist_ok=True)
        record_episode(domain, seed, args.frames, args.image_size, path, args.storage, branch)
    print(f"recorded {len(jobs)} episodes of {args.frames} frames into {args.out}")


if __name__ == "__main__":
    main()
