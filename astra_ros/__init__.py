"""Astra-ROS: the Astra world model as a learned simulator for ROS 2 (nodes, tools, demo worlds)."""

from pathlib import Path


def demo_model_path() -> Path:
    """Folder of the demo world model shipped inside this package (`AstraWorldModel.from_pretrained`)."""
    return Path(__file__).resolve().parent / "demo_model"
