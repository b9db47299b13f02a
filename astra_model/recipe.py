"""Training recipes: a chain of stage runs, each a stage config and the fields it changes.

A recipe YAML (e.g. `config/demo_recipe.yaml`) lists its steps under `chain:`, run in order. A step names its
stage config (`config`, relative to the recipe) and gives the fields it changes, merged into the config's as a
`base:` file's are (mappings key by key). Its `out_dir`, `init_from` and `warm_start` are folders under the run
directory (an absolute path stays as it is), so one recipe trains into any run directory; where the stage config
sets one of them, the step must give it, so that no step reads or writes outside the run unless it says so. Two
fields are the recipe's own:

- `resume_from`: an earlier step's folder (under the run directory) whose checkpoints are copied into this
  step's first, keeping the files it already has, so that the step continues that run on its own schedule.
- `final_config`: `AstraConfig` fields written into the step's final model folder after it trains (e.g. the
  sampler chosen on tuning seeds); the steps that start from that folder keep them.

`data_sets:` may hold the YAML anchors the steps' `data` refer to. `steps_scale` shortens every step alike for a
dry run: `steps`, `stop_at` and the N of a `checkpoints/step_N` folder a step names become `max(2, int(N * scale))`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import read_config, write_config
from .data import VideoEpisode
from .train import DataConfig, TrainConfig, merged_fields, read_stage_yaml, train

RUN_PATHS = ("out_dir", "init_from", "warm_start")
# A checkpoint folder as `train` names it; a dry run's checkpoints sit at scaled steps.
CHECKPOINT = re.compile(r"(checkpoints/step_)(\d+)$")

EpisodeLoader = Callable[[DataConfig], tuple[list[VideoEpisode], list[VideoEpisode]]]


@dataclass
class RecipeStep:
    """One step of a recipe, its folders resolved under the run directory."""

    config: TrainConfig
    resume_from: Path | None = None  # the folder whose checkpoints this step continues
    final_config: dict[str, Any] = field(default_factory=dict)  # AstraConfig fields written after training


def scaled(n: int, scale: float) -> int:
    """`n` steps at `scale`; at least 2, so that a dry run still trains, evaluates and saves."""
    return max(2, int(n * scale))


def load_recipe(path: str | Path, run_dir: str | Path, steps_scale: float = 1.0) -> list[RecipeStep]:
    """The steps of the recipe YAML `path`, their folders under `run_dir` and their lengths at `steps_scale`."""
    path = Path(path)
    recipe = yaml.safe_load(path.read_text())
    if not isinstance(recipe, dict) or not recipe.get("chain") or set(recipe) - {"chain", "data_sets"}:
        keys = sorted(recipe) if isinstance(recipe, dict) else recipe
        raise ValueError(f"{path}: a recipe has a `chain:` list of steps (and optional `data_sets:`), got {keys}")
    return [_step(path, n, fields, Path(run_dir), steps_scale) for n, fields in enumerate(recipe["chain"], 1)]


def _step(recipe: Path, number: int, fields: dict[str, Any], run_dir: Path, scale: float) -> RecipeStep:
    source = f"{recipe}, step {number}"
    fields = dict(fields)
    if "config" not in fields or "out_dir" not in fields:
        raise ValueError(f"{source}: a step names its stage `config` and its `out_dir`, got {sorted(fields)}")
    stage = read_stage_yaml(recipe.parent / fields.pop("config"))
    missing = [name for name in RUN_PATHS if stage.get(name) is not None and name not in fields]
    if missing:
        raise ValueError(f"{source}: give {missing} under the run directory (the stage config's point outside it)")
    resume_from = fields.pop("resume_from", None)
    final_config = fields.pop("final_config", {})
    for name in RUN_PATHS:
        if fields.get(name) is not None:
            fields[name] = str(run_dir / _scaled_checkpoint(fields[name], scale))
    cfg = TrainConfig.from_fields(merged_fields(stage, fields), f"{source} ({fields['out_dir']})")
    cfg.steps = scaled(cfg.steps, scale)
    cfg.stop_at = cfg.stop_at and scaled(cfg.stop_at, scale)
    return RecipeStep(cfg, None if resume_from is None else run_dir / resume_from, final_config)


def _scaled_checkpoint(folder: str, scale: float) -> str:
    return CHECKPOINT.sub(lambda m: f"{m[1]}{scaled(int(m[2]), scale):07d}", folder)


def run_recipe(steps: list[RecipeStep], load_episodes: EpisodeLoader) -> Path:
    """Train every step in order, each resumed from its latest checkpoint (so a stopped recipe goes on where
    it stopped), on the episodes `load_episodes` reads for its `data`; returns the last step's final folder."""
    final = Path()
    for number, step in enumerate(steps, 1):
        cfg = step.config
        print(f"recipe step {number}/{len(steps)}: {cfg.stage} -> {cfg.out_dir}")
        if step.resume_from is not None:
            _copy_missing(step.resume_from / "checkpoints", Path(cfg.out_dir) / "checkpoints")
        final = train(cfg, *load_episodes(cfg.data), resume=True)
        if step.final_config:
            write_config(read_config(final).replace(**step.final_config), final)
    return final


def _copy_missing(source: Path, target: Path) -> None:
    """Copy the files under `source` that `target` lacks (what `cp -rn` does)."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no checkpoints to resume from (has its step run?)")
    for file in source.rglob("*"):
        copy = target / file.relative_to(source)
        if file.is_file() and not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, copy)
