"""`astra_model` stands alone: every module imports, and a stage trains, with no ROS side installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter where astra_ros and the ROS libraries cannot be imported.
SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    from pathlib import Path

    class NoRos:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("astra_ros", "rclpy", "rosbags"):
                raise ModuleNotFoundError(f"{name} is blocked: astra_model must not need it")

    sys.meta_path.insert(0, NoRos())
    import numpy as np
    import torch
    import astra_model
    from astra_model import AstraConfig, AstraWorldModel
    from astra_model.data import VideoEpisode
    from astra_model.train import DataConfig, TrainConfig, train

    for module in pkgutil.iter_modules(astra_model.__path__):
        importlib.import_module(f"astra_model.{module.name}")
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    AstraWorldModel(AstraConfig.preset("tiny")).save_pretrained(out / "base")
    rng = np.random.default_rng(0)

    def episode(name):
        frames = rng.integers(0, 255, (21, 32, 32, 3), dtype=np.uint8)
        return VideoEpisode(frames, {"twist": rng.normal(size=(21, 6)).astype(np.float32)}, name)

    cfg = TrainConfig(
        stage="astra", out_dir=str(out / "astra"), data=DataConfig(train=[], val=[]), init_from=str(out / "base"),
        steps=1, batch_size=2, warmup_steps=1, log_every=1, eval_every=1, save_every=1,
    )
    final = train(cfg, [episode("train")], [episode("val0"), episode("val1")])
    AstraWorldModel.from_pretrained(final)
    assert not any(name.split(".")[0] in ("astra_ros", "rclpy", "rosbags") for name in sys.modules)
    print("trained", final)
    """
)


def test_astra_model_trains_a_stage_without_astra_ros(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"trained {tmp_path / 'astra' / 'final'}" in done.stdout
    assert (tmp_path / "astra" / "checkpoints" / "step_0000001" / "trainable.safetensors").is_file()
