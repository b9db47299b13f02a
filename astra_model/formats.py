"""Model folders of earlier formats, read as today's.

A folder's `config.json` and `model.safetensors` (in its metadata) name their format, `FORMAT` when written
today. Loading converts an earlier one:

- `astra-ros/1` configs kept our extensions' switches among MoAE's (`moae.spatial`, `moae.motion`,
  `moae.local_motion`, `moae.action_field`, `moae.field_hidden`, `moae.field_render`) and beside the
  paper's settings (`relative_commands`, `command_targets`, `pose_warp`); they are now `extensions`. A world
  was a modality's, spread over `separate_worlds`, `fixed_camera`, `anchor_tolerance` and
  `sampler.world_guidance_scales`; each modality with its own weights or a fixed camera is now a world
  of `worlds` named after it, and the others make the shared world, as they did. The action field was in
  every world's weights; it is named in every world.
- `astra-ros/1` weights kept the extensions' modules inside MoAE's (`moae.motion`, `moae.local_motion`,
  `moae.field`); they now sit beside it (`extensions.motion.head`, `extensions.local_motion`,
  `extensions.action_field`), in the shared weights as in each separate world's.
- Switches that were removed (nothing shipped used them) are dropped when a config leaves them off, their
  value when removed; one that is on is an error that names it, since the model would compute without it
  something else than it was trained to.

Two things behave differently in a converted model: a modality with a fixed camera but the shared weights
now commands a world of its own, so its commands no longer come in one chunk with another modality's (that
chunk was not anchored); and a removed switch cannot be turned on.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .config import SHARED_WORLD, AstraConfig
from .worlds import world_of_modality, worlds_on

FORMAT = "astra-ros/2"
FORMATS = ("astra-ros/1", FORMAT)

# Where format 1 kept each extension module inside a world's weights, and where it is now.
_MOVED_MODULES = {
    "moae.motion.": "extensions.motion.head.",
    "moae.local_motion.": "extensions.local_motion.",
    "moae.field.": "extensions.action_field.",
}

# Removed switches, by their path in the config, each with the value that left it off.
REMOVED_SWITCHES: dict[tuple[str, ...], Any] = {
    ("moae", "content_gate"): False,
    ("moae", "field_residual"): False,
    ("moae", "field_render_latest"): False,
    ("predict_change",): [],
    ("turned_anchor",): {},
}


def upgrade_config(config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A saved `AstraConfig` dict of format `fmt` as today's; ValueError naming a removed switch it turns on."""
    if fmt == FORMAT:
        return config
    old = without_removed_switches(config)
    moae, sampler = dict(old.pop("moae", {})), dict(old.pop("sampler", {}))
    worlds = _worlds(old, sampler.pop("world_guidance_scales", {}))
    named = {m for world in worlds.values() for m in world["modalities"]}
    # Every world had the field: the shared one (as `AstraConfig.all_worlds` adds it) and the named ones.
    every = ([SHARED_WORLD] if set(old.get("modalities", {})) - named else []) + list(worlds)
    extensions = _extensions(old, moae, every)
    return old | {"moae": moae, "sampler": sampler, "worlds": worlds, "extensions": extensions}


def _worlds(old: dict[str, Any], scales: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The worlds of a format-1 config (popping what said them): one per modality with its own weights or a
    fixed camera, named after it."""
    separate, fixed = old.pop("separate_worlds", []), old.pop("fixed_camera", [])
    tolerance = {"anchor_tolerance": old.pop("anchor_tolerance")} if "anchor_tolerance" in old else {}
    worlds = {}
    for name in [m for m in old.get("modalities", {}) if m in separate or m in fixed]:
        worlds[name] = {"modalities": [name], "own_weights": name in separate, "guidance_scale": scales.get(name)}
        worlds[name] |= {"fixed_camera": True, **tolerance} if name in fixed else {}
    return worlds


def _extensions(old: dict[str, Any], moae: dict[str, Any], worlds: list[str]) -> dict[str, Any]:
    """The extensions of a format-1 config (popping what said them from it and its `moae`), an action field
    in every one of `worlds`."""
    extensions = {name: moae.pop(name) for name in ("spatial", "motion", "local_motion") if name in moae}
    field = {"worlds": worlds, "hidden": moae.pop("field_hidden", 128), "render": moae.pop("field_render", False)}
    if moae.pop("action_field", False):
        extensions["action_field"] = field
    targets = old.pop("command_targets", [])
    readings = {m: "change_and_target" if m in targets else "change" for m in old.pop("relative_commands", [])}
    return extensions | {"pose_warp": old.pop("pose_warp", {}), "relative_commands": readings}


def without_removed_switches(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (a saved `AstraConfig` dict) without the removed switches it leaves off; ValueError naming
    the first one it switches on."""
    out = {**config, **{k: dict(v) for k, v in config.items() if isinstance(v, dict)}}
    for path, off in REMOVED_SWITCHES.items():
        *parents, name = path
        holder = out
        for parent in parents:
            holder = holder.get(parent, {})
        value = holder.pop(name, off)
        if value != off:
            raise ValueError(f"{'.'.join(path)} was removed; this model switches it on ({value!r}), so it cannot load")
    return out


def check_format(fmt: str | None, source: str) -> str:
    """`fmt` if this version reads it; ValueError naming `source` otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"{source}: format {fmt!r} is not one this version reads ({', '.join(FORMATS)})")
    return fmt


def upgrade_state(state: dict[str, torch.Tensor], fmt: str, config: AstraConfig) -> dict[str, torch.Tensor]:
    """A state dict of format `fmt` with today's names, for a model of `config` (today's). Today's names convert
    to themselves, so a state dict of unknown format can be read as the first.

    A format-1 world's weights were named after its modality; they take the name of the world it commands.
    A format-1 action field that `config` leaves out is dropped where its output layer is zero, so that it
    added nothing (the shipped demo model's mobile world's, which no stage trained); any other stays, for
    the caller to find unexpected."""
    if fmt == FORMAT:
        return state
    renamed = {_renamed(key, config): tensor for key, tensor in state.items()}
    return {key: tensor for key, tensor in renamed.items() if not _unused_zero_field(key, renamed, config)}


def _renamed(key: str, config: AstraConfig) -> str:
    world, rest = re.match(r"^(?:worlds\.([^.]+)\.)?(.*)$", key).groups()
    if world in config.modalities:
        world = world_of_modality(world, config)
    prefix = "" if world is None else f"worlds.{world}."
    for old, new in _MOVED_MODULES.items():
        if rest.startswith(old):
            return f"{prefix}{new}{rest[len(old) :]}"
    return prefix + rest


def _unused_zero_field(key: str, state: dict[str, torch.Tensor], config: AstraConfig) -> bool:
    """Whether `key` belongs to an action field that `config` gives its weights none of, and that adds zero."""
    found = re.match(r"^(?:worlds\.([^.]+)\.)?extensions\.action_field\.", key)
    if found is None:
        return False
    field = config.extensions.action_field
    if field is not None and set(worlds_on(found[1], config)) & set(field.worlds):
        return False
    output = [state[f"{found[0]}net.4.{name}"] for name in ("weight", "bias")]
    return not any(tensor.any() for tensor in output)
