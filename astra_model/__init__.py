"""Astra: an interactive, action-conditioned video world model on a frozen Wan-2.1 backbone.

Pure PyTorch + diffusers; no ROS import anywhere in this package.
"""

from .config import AstraConfig, HistoryConfig, MoAEConfig, NoiseAugConfig, SamplerConfig
from .history import History
from .model import AstraOutput, AstraWorldModel, KVCache

__all__ = [
    "AstraConfig",
    "AstraOutput",
    "AstraWorldModel",
    "History",
    "HistoryConfig",
    "KVCache",
    "MoAEConfig",
    "NoiseAugConfig",
    "SamplerConfig",
]
