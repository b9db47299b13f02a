"""Training recipes (`astra_model.recipe`, run by `astra-train --recipe`): the demo recipe resolves to the
stage runs that trained the shipped model (test/fixtures/demo_recipe_steps.json, resolved from the stage configs
the model was trained with)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from astra_model.recipe import load_recipe, scaled
from astra_model.train import REMOVED_SETTINGS
from astra_ros.train import main as train_cli

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "config" / "demo_recipe.yaml"


def _normalised(value: Any, run_dir: Path) -> Any:
    """`value` with the run directory written as `<run>`, as the fixture has it."""
    if isinstance(value, dict):
        return {k: _normalised(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, run_dir) for v in value]
    return value.replace(str(run_dir), "<run>") if isinstance(value, str) else value


def test_demo_recipe_resolves_to_the_shipped_models_stage_runs(tmp_path):
    expected = json.loads((ROOT / "test" / "fixtures" / "demo_recipe_steps.json").read_text())
    steps = load_recipe(RECIPE, tmp_path)
    assert len(steps) == len(expected)
    for step, want in zip(steps, expected, strict=True):
        fields = want["train_config"]
        # Settings removed since were off in every run, and are not compared.
        assert all(fields.pop(name) == off for name, off in REMOVED_SETTINGS.items())
        assert _normalised(dataclasses.asdict(step.config), tmp_path) == fields, fields["out_dir"]
        resume_from = None if step.resume_from is None else str(step.resume_from)
        assert _normalised(resume_from, tmp_path) == want["resume_from"], fields["out_dir"]
        assert step.final_config == want["final_config"], fields["out_dir"]


@pytest.mark.parametrize("scale", [0.1, 1e-4])
def test_a_dry_run_scales_every_step_alike_and_keeps_the_chain_whole(scale):
    full, dry = load_recipe(RECIPE, "runs/demo"), load_recipe(RECIPE, "runs/demo", steps_scale=scale)
    for long, short in zip(full, dry, strict=True):
        assert short.config.steps == scaled(long.config.steps, scale) >= 2
        assert short.config.stop_at == (long.config.stop_at and scaled(long.config.stop_at, scale))
    by_dir = {Path(step.config.out_dir).name: step.config for step in dry}
    # A step warm-started from a checkpoint names the one its source stops at, whatever the scale.
    stopped = by_dir["astra3000"].end_step
    assert by_dir["astra_local"].warm_start == f"runs/demo/astra3000/checkpoints/step_{stopped:07d}"


def test_recipe_errors_name_the_step_and_what_is_wrong(tmp_path):
    (tmp_path / "stage.yaml").write_text(
        "stage: astra\nout_dir: runs/x\ninit_from: runs/base\ndata: {train: [t], val: [v]}\n"
    )

    def load(text: str):
        (tmp_path / "recipe.yaml").write_text(text)
        return load_recipe(tmp_path / "recipe.yaml", "run")

    with pytest.raises(ValueError, match=r"a recipe has a `chain:` list of steps .* got \['steps'\]"):
        load("steps: [{config: stage.yaml, out_dir: a}]\n")
    with pytest.raises(ValueError, match=r"step 1: a step names its stage `config` and its `out_dir`"):
        load("chain: [{config: stage.yaml}]\n")
    # A step that left out a folder its stage config sets would read outside the run.
    with pytest.raises(ValueError, match=r"step 2: give \['init_from'\] under the run directory"):
        load("chain: [{config: stage.yaml, out_dir: a, init_from: b}, {config: stage.yaml, out_dir: c}]\n")
    with pytest.raises(ValueError, match=r"step 1 \(run/a\): unknown fields \['stpes'\]"):
        load("chain: [{config: stage.yaml, out_dir: a, init_from: b, stpes: 3}]\n")
    # An absolute folder (e.g. a shipped model to start from) stays as it is.
    assert load("chain: [{config: stage.yaml, out_dir: a, init_from: /models/demo}]\n")[0].config.init_from == (
        "/models/demo"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give a stage config or --recipe, one of them"),
        (["config/stage_vae.yaml", "--recipe", str(RECIPE)], "give a stage config or --recipe, one of them"),
        (["--recipe", str(RECIPE), "--set", "lr=1"], "--set and --resume are for one stage"),
        (["--recipe", str(RECIPE), "--steps-scale", "0"], "--steps-scale must be > 0"),
        (["config/stage_vae.yaml", "--set", "lr"], r"--set takes KEY=VALUE, got \['lr'\]"),
    ],
)
def test_astra_train_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_cli(argv)
    assert re.search(message, capsys.readouterr().err)
