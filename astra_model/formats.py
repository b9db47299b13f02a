"""Model folders of earlier formats, read as today's.

A folder's `config.json` and `model.safetensors` (in its metadata) name their format, `FORMAT` when written
today. Loading converts an earlier one:

- `astra-ros/1` configs kept our extensions' switches among MoAE's (`moae.spatial`, `moae.motion`,
  `moae.local_motion`, `moae.action_field`, `moae.field_hidden`, `moae.field_render`) and beside the
  paper's settings (`relative_commands`, `command_targets`, `pose_warp`); they are now `extensions`. A world
  was a modality's, spread over `separate_worlds`, `fixed_camera`, `anchor_tolerance` and
  `sampler.world_guidance_scales`; each modality with its own weights or a fixed camera is now a world
  of `worlds` named after it, and the others make the shared world, as they did.
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
    moae = dict(old.pop("moae", {}))
    sampler = dict(old.pop("sampler", {}))
    scales = sampler.pop("world_guidance_scales", {})
    separate, fixed = old.pop("separate_worlds", []), old.pop("fixed_camera", [])
    tolerance = old.pop("anchor_tolerance", None)
    worlds = {}
    for name in [m for m in old.get("modalities", {}) if m in separate or m in fixed]:
        worlds[name] = {"modalities": [name], "own_weights": name in separate, "guidance_scale": scales.get(name)}
        if name in fixed:
            worlds[name] |= {"fixed_camera": True} | ({} if tolerance is None else {"anchor_tolerance": tolerance})
    targets = old.pop("command_targets", [])
    readings = {m: "change_and_target" if m in targets else "change" for m in old.pop("relative_commands", [])}
    extensions = {name: moae.pop(name) for name in ("spatial", "motion", "local_motion") if name in moae}
    field = {"hidden": moae.pop("field_hidden", 128), "render": moae.pop("field_render", False)}
    if moae.pop("action_field", False):
        extensions["action_field"] = field
    extensions |= {"pose_warp": old.pop("pose_warp", {}), "relative_commands": readings}
    return old | {"moae": moae, "sampler": sampler, "worlds": worlds, "extensions": extensions}


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


def upgrade_state(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """A state dict of format `fmt` with today's names. Today's names convert to themselves, so a state dict
    of unknown format can be read as the first."""
    if fmt == FORMAT:
        return state
    return {_renamed(key): tensor for key, tensor in state.items()}


def _renamed(key: str) -> str:
    world, rest = re.match(r"^(worlds\.[^.]+\.)?(.*)$", key).groups()
    for old, new in _MOVED_MODULES.items():
        if rest.startswith(old):
            return f"{world or ''}{new}{rest[len(old) :]}"
    return key
