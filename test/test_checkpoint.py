"""save_pretrained / from_pretrained round trip and its error messages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import own_worlds, randomise_action_path, tiny_config
from safetensors.torch import load_file, save_file

from astra_model import AstraWorldModel
from astra_model.checkpoint import CheckpointError, read_config
from astra_model.formats import REMOVED_SWITCHES


@pytest.fixture()
def saved(tmp_path, tiny_model):
    randomise_action_path(tiny_model)
    tiny_model.save_pretrained(tmp_path)
    return tmp_path, tiny_model


def test_round_trip_is_bit_exact(saved):
    folder, model = saved
    loaded = AstraWorldModel.from_pretrained(folder)
    assert loaded.config == model.config
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert got[key].dtype == ref[key].dtype and torch.equal(got[key], ref[key]), key
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([300.0])
    acts = {"twist": torch.randn(1, 8, 6)}
    with torch.no_grad():
        assert torch.equal(model.predict_velocity(x, t, acts), loaded.predict_velocity(x, t, acts))
    assert loaded.num_parameters(trainable_only=True) == model.num_parameters(trainable_only=True)


def test_missing_files_are_named(tmp_path, saved):
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        AstraWorldModel.from_pretrained(tmp_path / "nowhere")
    folder, _ = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        AstraWorldModel.from_pretrained(folder)


def test_corrupt_files_are_named(saved):
    folder, _ = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        AstraWorldModel.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not a valid Astra config"):
        AstraWorldModel.from_pretrained(folder)


def test_shape_mismatch_and_missing_keys_name_the_key(saved):
    folder, _ = saved
    path = folder / "model.safetensors"
    state = load_file(str(path))
    state["adapters.0.weight"] = torch.zeros(3, 3)
    save_file(state, str(path))
    with pytest.raises(
        CheckpointError, match=r"'adapters\.0\.weight' has shape \[3, 3\], the model expects \[64, 64\]"
    ):
        AstraWorldModel.from_pretrained(folder)
    del state["adapters.0.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing key 'adapters\.0\.weight'"):
        AstraWorldModel.from_pretrained(folder)


def test_config_mismatch_is_reported(saved):
    folder, _ = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["config"]["modalities"]["twist"] = 5
    del cfg["config"]["action_labels"]["twist"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"moae\.encoders\.twist\.weight"):
        AstraWorldModel.from_pretrained(folder)


def test_seed_frame_travels_with_the_checkpoint(tmp_path, tiny_model, seed_frames):
    tiny_model.seed_frame = seed_frames[0]
    tiny_model.save_pretrained(tmp_path)
    loaded = AstraWorldModel.from_pretrained(tmp_path)
    assert loaded.seed_frame.dtype == np.uint8 and np.array_equal(loaded.seed_frame, seed_frames[0])


# The shipped demo model's config.json as it was written in format 1 (it leaves every removed switch off).
FORMAT_1_DEMO_CONFIG = Path(__file__).parent / "data" / "demo_config_astra-ros-1.json"


@pytest.mark.parametrize(
    ("path", "on"),
    [
        (("moae", "content_gate"), True),
        (("moae", "field_residual"), True),
        (("moae", "field_render_latest"), True),
        (("predict_change",), ["joints"]),
        (("turned_anchor",), {"camera_pose": 24.0}),
    ],
)
def test_a_removed_switch_loads_when_off_and_is_named_when_on(tmp_path, path, on):
    data = json.loads(FORMAT_1_DEMO_CONFIG.read_text())
    holder = data["config"]["moae"] if len(path) == 2 else data["config"]
    assert holder[path[-1]] == REMOVED_SWITCHES[path]
    shutil.copy(FORMAT_1_DEMO_CONFIG, tmp_path / "config.json")
    off = read_config(tmp_path)
    del holder[path[-1]]
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert read_config(tmp_path) == off
    holder[path[-1]] = on
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{'.'.join(path)} was removed; this model switches it on")):
        read_config(tmp_path)


# Where format 1 kept the extensions' modules (inside MoAE's), by where they are now.
FORMAT_1_NAMES = {
    "extensions.motion.head.": "moae.motion.",
    "extensions.local_motion.": "moae.local_motion.",
    "extensions.action_field.": "moae.field.",
}


def test_format_1_weights_load_under_todays_names(tmp_path):
    torch.manual_seed(0)
    extensions = {"spatial": True, "motion": True, "local_motion": True, "action_field": {"render": True}}
    model = AstraWorldModel(tiny_config(extensions=extensions, worlds=own_worlds("joints")))
    for param in model.parameters():
        torch.nn.init.normal_(param)
    model.save_pretrained(tmp_path)
    old = {}
    for key, tensor in load_file(str(tmp_path / "model.safetensors")).items():
        for new, before in FORMAT_1_NAMES.items():
            key = key.replace(new, before)
        old[key] = tensor
    assert "worlds.joints.moae.field.renderer.0.weight" in old and "moae.motion.weight" in old
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "astra-ros/1"})
    loaded = AstraWorldModel.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
