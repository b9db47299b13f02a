"""`astra-train` / `python -m astra_ros.train`: train Astra's stages on rosbag2 recordings.

    astra-train config/stage_vae.yaml [--resume] [--set KEY=VALUE ...]           one stage
    astra-train --recipe config/demo_recipe.yaml [--run-dir DIR] [--steps-scale S]  every step of a recipe

The stages, their YAML fields and recipes are `astra_model.train`'s and `astra_model.recipe`'s; this reads
the episodes a config's `data` names from bags (rosbags, no rclpy) and hands them to the trainer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from astra_model.data import VideoEpisode
from astra_model.recipe import load_recipe, run_recipe
from astra_model.train import STAGES, DataConfig, TrainConfig, train

from .dataset import load_bag_episodes


def load_episodes(data: DataConfig) -> tuple[list[VideoEpisode], list[VideoEpisode]]:
    """The training and validation episodes of the bags `data` names."""
    return (
        load_bag_episodes(data.train, data.image_topic, data.action_topics, data.joint_names),
        load_bag_episodes(data.val, data.image_topic, data.action_topics, data.joint_names),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Train Astra's stages ({', '.join(STAGES)}) on rosbag2 bags.")
    parser.add_argument("config", nargs="?", help="stage config YAML (see config/stage_*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override top-level fields")
    parser.add_argument("--recipe", help="recipe YAML (e.g. config/demo_recipe.yaml): train its steps in order")
    parser.add_argument("--run-dir", default="runs/demo", help="with --recipe: the folder its steps train into")
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="with --recipe: scale every step's length (0.1: a dry run)"
    )
    args = parser.parse_args(argv)
    if (args.config is None) == (args.recipe is None):
        parser.error("give a stage config or --recipe, one of them")
    final = _recipe(parser, args) if args.recipe else _stage(parser, args)
    print(f"trained: {final}")


def _stage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set takes KEY=VALUE, got {bad}")
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    cfg = TrainConfig.load(args.config, overrides)
    return train(cfg, *load_episodes(cfg.data), resume=args.resume)


def _recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    if args.set or args.resume:
        parser.error("--set and --resume are for one stage; a recipe's steps set their fields and always resume")
    if args.steps_scale <= 0:
        parser.error(f"--steps-scale must be > 0, got {args.steps_scale}")
    return run_recipe(load_recipe(args.recipe, args.run_dir, args.steps_scale), load_episodes)


if __name__ == "__main__":
    main()
