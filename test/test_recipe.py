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

from astra_model.checkpoint import read_config
from astra_model.config import AstraConfig
from astra_model.formats import upgrade_config
from astra_model.recipe import load_recipe, scaled
from astra_model.train import REMOVED_SETTINGS
from astra_model.worlds import world_modalities
from astra_ros import demo_model_path
from astra_ros.train import main as train_cli

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "config" / "demo_recipe.yaml"
# The AstraConfig fields that the fixture's (format 1) `model:` overrides merge into rather than replace.
FORMAT_1_NESTED = ("moae", "history", "noise_aug", "sampler", "backbone", "vae")


def _normalised(value: Any, run_dir: Path) -> Any:
    """`value` with the run directory written as `<run>`, as the fixture has it."""
    if isinstance(value, dict):
        return {k: _normalised(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, run_dir) for v in value]
    return value.replace(str(run_dir), "<run>") if isinstance(value, str) else value


def _format_1_replaced(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config dict with `overrides` applied as `AstraConfig.replace` applied them then."""
    return config | {k: config.get(k, {}) | v if k in FORMAT_1_NESTED else v for k, v in overrides.items()}


def _model_config(step_fields: dict[str, Any], models: dict[str, Any], format_1: bool) -> Any:
    """The model config a step trains (before its data's action statistics): its `model:` overrides on the
    preset in stages 1 and 2, else on the model of the folder it starts from (`models`, by final folder); as
    the fixture's format-1 dicts were applied then, or as `AstraConfig.replace` applies today's."""
    overrides = dict(step_fields["model"])
    if step_fields["stage"] not in ("vae", "backbone"):
        base = models[step_fields["init_from"]]
    elif format_1:
        # The presets' worlds and extensions are at their defaults, which is what format 1 had.
        preset = AstraConfig.preset(overrides.pop("preset", "tiny")).to_dict()
        base = {k: v for k, v in preset.items() if k not in ("worlds", "extensions")}
    else:
        base = AstraConfig.preset(overrides.pop("preset", "tiny"))
    return _format_1_replaced(base, overrides) if format_1 else base.replace(**overrides)


def _named_worlds(config: AstraConfig, names: dict[str, str]) -> dict[str, Any]:
    """`config` as a dict in which every world, the shared one too, has a name, from `names` where given,
    and the action field is in the worlds the recipe trains it in."""
    data = config.to_dict()
    data["worlds"] = {names.get(name, name): dataclasses.asdict(world) for name, world in config.all_worlds.items()}
    if config.extensions.action_field is not None:
        # Format 1 gave every world a field. The recipe trains none in the mobile world, whose field stayed at
        # its initial zero output, so the recipe leaves it out (as loading the shipped model does).
        worlds = [names.get(name, name) for name in config.extensions.action_field.worlds]
        data["extensions"]["action_field"]["worlds"] = [name for name in worlds if name != "mobile"]
    return data


def _new_names(old: AstraConfig, new: AstraConfig) -> dict[str, str]:
    """Each world of `old` -> the world of `new` that its modalities command: the recipe names the demo's
    worlds, where a format-1 config named a separate world after its modality."""
    by_modalities = {frozenset(m): name for name, m in world_modalities(new).items()}
    names = {name: by_modalities.get(frozenset(m)) for name, m in world_modalities(old).items()}
    assert None not in names.values() and len(set(names.values())) == len(by_modalities), (old.worlds, new.worlds)
    return names


def _renamed_world(key: str, names: dict[str, str]) -> str:
    """A parameter name (or its start) with the world it is in renamed by `names`."""
    return re.sub(r"^worlds\.([^.]+)\.", lambda m: f"worlds.{names[m[1]]}.", key)


def test_demo_recipe_resolves_to_the_shipped_models_stage_runs(tmp_path):
    """Each step's settings are the fixture's, and so is the model it trains: the fixture's `model:`
    overrides (format 1) applied along the chain as they were then, and converted as a saved format-1 config
    is (`astra_model.formats`), give the model that the recipe's overrides give, up to the worlds' names."""
    expected = json.loads((ROOT / "test" / "fixtures" / "demo_recipe_steps.json").read_text())
    steps = load_recipe(RECIPE, tmp_path)
    assert len(steps) == len(expected)
    old_models, new_models = {}, {}  # by final folder: the model a later step starts from
    for step, want in zip(steps, expected, strict=True):
        fields, got = want["train_config"], _normalised(dataclasses.asdict(step.config), tmp_path)
        # Settings removed since were off in every run, and are not compared.
        assert all(fields.pop(name) == off for name, off in REMOVED_SETTINGS.items())
        old, new = _model_config(fields, old_models, True), _model_config(got, new_models, False)
        converted = AstraConfig.from_dict(upgrade_config(old, "astra-ros/1"))
        names = _new_names(converted, new)
        assert _named_worlds(new, {}) == _named_worlds(converted, names), fields["out_dir"]
        old_models[f"{fields['out_dir']}/final"] = _format_1_replaced(old, want["final_config"])
        new_models[f"{got['out_dir']}/final"] = new.replace(**step.final_config)
        final = AstraConfig.from_dict(upgrade_config(old_models[f"{fields['out_dir']}/final"], "astra-ros/1"))
        assert _named_worlds(new_models[f"{got['out_dir']}/final"], {}) == _named_worlds(final, names)
        # The rest of each step's settings are the fixture's, learning rates named by the worlds' new names.
        lr_scale = {_renamed_world(key, names): scale for key, scale in fields["lr_scale"].items()}
        assert got | {"model": None} == fields | {"model": None, "lr_scale": lr_scale}, fields["out_dir"]
        resume_from = None if step.resume_from is None else str(step.resume_from)
        assert _normalised(resume_from, tmp_path) == want["resume_from"], fields["out_dir"]
    # The last step's model is the shipped one, but for what the data decides: the VAE and the action statistics.
    shipped = read_config(demo_model_path())
    assert new_models[f"{got['out_dir']}/final"].replace(vae=shipped.vae, action_stats=shipped.action_stats) == shipped


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
