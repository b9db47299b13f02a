"""The shipped demo model's frames stay what they were when it shipped.

`test/data/demo_frames.npz` holds, per case, seed frames from a MuJoCo world on a held-out seed, the
commands that made them, two chunks of commands and the frames the shipped model drew from them
(`test/record_demo_frames.py` wrote it). A refactor of the model library must reproduce those frames to
within one grey level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from record_demo_frames import OUT, rollout

from astra_model import AstraWorldModel
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
