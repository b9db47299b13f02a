"""Saving and loading Astra models, and converting the official Astra release.

`save_pretrained(dir)` writes `config.json` (the `AstraConfig`) and `model.safetensors` (every weight,
backbone and VAE included, so a folder is self-contained). Loading checks the files and every tensor
and names the file and key of anything missing, corrupt or mismatched.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import AstraConfig
from .formats import FORMAT, FORMATS, check_format, upgrade_config, upgrade_state
from .model import AstraWorldModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SEED_FRAME_NAME = "seed_frame.png"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


def save_model(model: AstraWorldModel, directory: str | Path) -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": FORMAT})
    write_config(model.config, out)
    if model.seed_frame is not None:
        iio.imwrite(out / SEED_FRAME_NAME, model.seed_frame)


def write_config(config: AstraConfig, directory: str | Path) -> None:
    """`config.json` of a model folder (also to change a saved model's settings, e.g. its sampler)."""
    (Path(directory) / CONFIG_NAME).write_text(json.dumps({"format": FORMAT, "config": config.to_dict()}, indent=2))


def read_config(directory: str | Path) -> AstraConfig:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (is {Path(directory)} an Astra model folder?)")
    try:
        data = json.loads(path.read_text())
        return AstraConfig.from_dict(upgrade_config(data["config"], check_format(data.get("format"), str(path))))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid Astra config ({err})") from err


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({err})") from err


def read_model_weights(path: str | Path, config: AstraConfig) -> dict[str, torch.Tensor]:
    """The weights of a model of `config` with today's names, whatever format wrote them
    (`astra_model.formats`); a file that names none (e.g. written by hand) is read as the first format."""
    state = read_weights(path)
    with safe_open(str(path), "pt") as file:
        fmt = (file.metadata() or {}).get("format", FORMATS[0])
    try:
        return upgrade_state(state, check_format(fmt, str(path)), config)
    except ValueError as err:
        raise CheckpointError(str(err)) from err


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming `source` and the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in total)")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in total)")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {list(tensor.shape)}, the model expects {list(expected[key].shape)}"
            )


def build_from_state(config: AstraConfig, state: dict[str, torch.Tensor], source: str) -> AstraWorldModel:
    """A model with exactly `state` as weights, without first allocating a random initialisation."""
    with init_empty_weights(include_buffers=False):
        model = AstraWorldModel(config)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    model.set_trainable()
    return model.eval()


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> AstraWorldModel:
    config = read_config(directory)
    weights = Path(directory) / WEIGHTS_NAME
    model = build_from_state(config, read_model_weights(weights, config), str(weights)).to(device)
    seed = Path(directory) / SEED_FRAME_NAME
    if seed.is_file():
        try:
            model.seed_frame = np.ascontiguousarray(iio.imread(seed)[..., :3], dtype=np.uint8)
        except OSError as err:
            raise CheckpointError(f"{seed}: unreadable image ({err})") from err
    return model
