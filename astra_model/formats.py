"""Model folders written before the configuration changed, read as today's.

A folder's `config.json` names its format. Loading converts an earlier one:

- Switches that were removed (nothing shipped used them) are dropped when a folder leaves them off, their
  value when removed; one that is on is an error that names it, since the model would compute without it
  something else than it was trained to.
"""

from __future__ import annotations

from typing import Any

# Removed switches, by their path in the config, each with the value that left it off.
REMOVED_SWITCHES: dict[tuple[str, ...], Any] = {
    ("moae", "content_gate"): False,
    ("moae", "field_residual"): False,
    ("moae", "field_render_latest"): False,
    ("predict_change",): [],
    ("turned_anchor",): {},
}


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
