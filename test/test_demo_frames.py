"""The shipped demo model's frames stay what they were when it shipped.

`test/data/demo_frames.npz` holds, per case, seed frames from a MuJoCo world on a held-out seed, the
commands that made them, two chunks of commands and the frames the shipped model drew from them
(`test/record_demo_frames.py` wrote it). A refactor of the model library must reproduce those frames to
within one grey level.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FORMAT_1_DEMO_CONFIG
from record_demo_frames import OUT, rollout

from astra_model import AstraWorldModel
from astra_model.worlds import world_modalities
from astra_ros import demo_model_path

CASES = sorted({key.split("_")[0] for key in np.load(OUT)}, key=int)


@pytest.fixture(scope="module")
def demo() -> AstraWorldModel:
    return AstraWorldModel.from_pretrained(demo_model_path()).eval()


@pytest.mark.parametrize("case", CASES)
def test_the_shipped_model_draws_its_recorded_frames(demo: AstraWorldModel, case: str) -> None:
    data = np.load(Path(OUT))
    modality, seed, with_commands = data[f"{case}_meta"]
    frames = rollout(
        demo,
        str(modality),
        data[f"{case}_seeds"],
        data[f"{case}_seed_commands"],
        data[f"{case}_plan"],
        with_commands == "1",
        int(seed),
    )
    expected = data[f"{case}_frames"]
    assert frames.shape == expected.shape and frames.dtype == np.uint8
    worst = int(np.abs(frames.astype(np.int16) - expected).max())
    assert worst <= 1, f"case {case} ({modality}): frames moved by up to {worst} grey levels"


def test_the_shipped_model_also_loads_from_the_format_1_config_it_shipped_with(demo: AstraWorldModel, tmp_path) -> None:
    """The format-1 config names the separate worlds after their modalities and gives every world an action
    field: its weights are those of today's, plus the mobile world's field, which adds exactly zero."""
    for name in ("model.safetensors", "seed_frame.png"):
        (tmp_path / name).symlink_to(demo_model_path() / name)
    shutil.copy(FORMAT_1_DEMO_CONFIG, tmp_path / "config.json")
    old = AstraWorldModel.from_pretrained(tmp_path).eval()
    assert world_modalities(old.config) == {
        "shared": ("twist",),
        "joints": ("joints",),
        "camera_pose": ("camera_pose",),
    }
    names = {"worlds.arm.": "worlds.joints.", "worlds.camera.": "worlds.camera_pose."}
    state, old_state = demo.state_dict(), old.state_dict()
    for key, tensor in state.items():
        old_key = next((key.replace(new, was) for new, was in names.items() if key.startswith(new)), key)
        assert torch.equal(old_state.pop(old_key), tensor), key
    assert set(old_state) == {k for k in old.extensions.state_dict(prefix="extensions.") if ".action_field." in k}
    assert not old.extensions.action_field.net[-1].weight.any() and not old.extensions.action_field.net[-1].bias.any()
    test_the_shipped_model_draws_its_recorded_frames(old, "0")  # the mobile world's, which ran the zero field
