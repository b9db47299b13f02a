"""Astra: an interactive, action-conditioned video world model on a frozen Wan-2.1 backbone.

Pure PyTorch + diffusers; no ROS import anywhere in this package.
"""

from .config import (
    ActionFieldConfig,
    AstraConfig,
    ExtensionsConfig,
    HistoryConfig,
    MoAEConfig,
    NoiseAugConfig,
    SamplerConfig,
    WorldConfig,
)
from .history import History
from .model import AstraOutput, AstraWorldModel, KVCache

__all__ = [
    "ActionFieldConfig",
    "AstraConfig",
    "AstraOutput",
    "AstraWorldModel",
    "ExtensionsConfig",
    "History",
    "HistoryConfig",
    "KVCache",
    "MoAEConfig",
    "NoiseAugConfig",
    "SamplerConfig",
    "WorldConfig",
]
