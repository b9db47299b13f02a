"""How every weight Astra adds starts: so that a fresh model computes exactly what its frozen backbone does.

ACT-Adapters start as the identity; every layer that writes into the backbone's computation (the experts,
and each extension's output layer) starts at zero. Training then moves them away from a model that is
already a good video model.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def identity_(layer: nn.Linear) -> None:
    """`layer` computes its input: weight I, bias 0."""
    layer.weight.copy_(torch.eye(layer.weight.shape[0]))
    layer.bias.zero_()


@torch.no_grad()
def zero_(layer: nn.Linear | nn.Conv3d) -> None:
    """`layer` outputs zero whatever its input: weight 0, bias 0."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
