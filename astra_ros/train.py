"""`astra-train` / `python -m astra_ros.train CONFIG.yaml`: train a stage of Astra on rosbag2 recordings.

    astra-train config/stage_vae.yaml [--resume] [--set KEY=VALUE ...]

The stages and their YAML fields are `astra_model.train`'s; this reads the episodes the config's `data`
names from bags (rosbags, no rclpy) and hands them to the trainer.
"""

from __future__ import annotations

import argparse

import yaml

from astra_model.data import VideoEpisode
from astra_model.train import STAGES, DataConfig, TrainConfig, train

from .dataset import load_bag_episodes


def load_episodes(data: DataConfig) -> tuple[list[VideoEpisode], list[VideoEpisode]]:
    """The training and validation episodes of the bags `data` names."""
    return (
        load_bag_episodes(data.train, data.image_topic, data.action_topics, data.joint_names),
        load_bag_episodes(data.val, data.image_topic, data.action_topics, data.joint_names),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Train a stage of Astra ({', '.join(STAGES)}) on rosbag2 bags.")
    parser.add_argument("config", help="stage config YAML (see config/)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override top-level fields")
    args = parser.parse_args(argv)
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set takes KEY=VALUE, got {bad}")
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    cfg = TrainConfig.load(args.config, overrides)
    final = train(cfg, *load_episodes(cfg.data), resume=args.resume)
    print(f"stage {cfg.stage} done: {final}")


if __name__ == "__main__":
    main()
