"""save_pretrained / from_pretrained round trip and its error messages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FORMAT_1_DEMO_CONFIG, randomise_action_path, tiny_config, trained
from safetensors.torch import load_file, save_file

from astra_model import AstraWorldModel
from astra_model.checkpoint import CheckpointError, read_config, write_config
from astra_model.config import ActionFieldConfig, AstraConfig, ExtensionsConfig, WorldConfig
from astra_model.formats import REMOVED_SWITCHES, upgrade_config


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
    # Format 1 named a separate world after its modality.
    "worlds.arm.": "worlds.joints.",
}
ARM = {"arm": {"modalities": ["joints"], "own_weights": True}}


def _as_format_1(folder: Path, change: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Rewrite `folder`'s weights as format 1 wrote them, with `change` added to some (by format-1 name)."""
    old = {}
    for key, tensor in load_file(str(folder / "model.safetensors")).items():
        for new, before in FORMAT_1_NAMES.items():
            key = key.replace(new, before)
        old[key] = tensor + (change or {}).get(key, 0.0)
    save_file(old, str(folder / "model.safetensors"), metadata={"format": "astra-ros/1"})
    return old


def test_format_1_weights_load_under_todays_names(tmp_path):
    torch.manual_seed(0)
    field = {"worlds": ["shared", "arm"], "render": True}
    extensions = {"spatial": True, "motion": True, "local_motion": True, "action_field": field}
    model = AstraWorldModel(tiny_config(extensions=extensions, worlds=ARM))
    for param in model.parameters():
        torch.nn.init.normal_(param)
    model.save_pretrained(tmp_path)
    old = _as_format_1(tmp_path)
    assert "worlds.joints.moae.field.renderer.0.weight" in old and "moae.motion.weight" in old
    loaded = AstraWorldModel.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_format_1_field_that_adds_nothing_is_left_out_where_the_config_has_none(tmp_path):
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(extensions={"action_field": {"worlds": ["shared", "arm"]}}, worlds=ARM))
    trained(model.worlds["arm"].extensions.action_field)  # the shared world's field stays as it started
    model.save_pretrained(tmp_path)
    _as_format_1(tmp_path)
    write_config(model.config.replace(extensions={"action_field": {"worlds": ["arm"]}}), tmp_path)
    loaded = AstraWorldModel.from_pretrained(tmp_path)
    assert loaded.extensions.action_field is None
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in loaded.state_dict().items())
    # A field that adds something cannot be left out unnoticed.
    model.save_pretrained(tmp_path)
    _as_format_1(tmp_path, change={"moae.field.net.4.bias": 1.0})
    write_config(model.config.replace(extensions={"action_field": {"worlds": ["arm"]}}), tmp_path)
    with pytest.raises(CheckpointError, match=r"unexpected key 'extensions\.action_field\.net\.0\.bias'"):
        AstraWorldModel.from_pretrained(tmp_path)


def test_a_format_1_config_converts_as_it_computed():
    old = json.loads(FORMAT_1_DEMO_CONFIG.read_text())["config"]
    plain = {k: v for k, v in old.items() if k not in ("separate_worlds", "fixed_camera", "pose_warp")}
    plain |= {"moae": old["moae"] | {"spatial": False, "action_field": False, "field_render": False}}
    plain |= {"relative_poses": [], "relative_commands": [], "command_targets": [], "action_stats": {}}
    config = AstraConfig.from_dict(upgrade_config(plain, "astra-ros/1"))
    assert config.worlds == {} and config.extensions == ExtensionsConfig(motion=True, local_motion=True)
    assert config.sampler.guidance_scale == 1.5 and config.all_worlds["shared"].modalities == list(old["modalities"])
    demo = AstraConfig.from_dict(upgrade_config(old, "astra-ros/1"))
    assert demo.all_worlds == {
        "shared": WorldConfig(["twist"]),
        "joints": WorldConfig(
            ["joints"], own_weights=True, guidance_scale=2.0, fixed_camera=True, anchor_tolerance=12.0
        ),
        "camera_pose": WorldConfig(["camera_pose"], own_weights=True, guidance_scale=1.25),
    }
    assert demo.extensions.action_field == ActionFieldConfig(["shared", "joints", "camera_pose"], 512, render=True)
    assert demo.extensions.relative_commands == {"joints": "change_and_target"}
