"""Motion embeddings (ours, `extensions.motion`): the commands move where the generated tokens sit for rotary
attention, as a camera's motion moves its whole view.

A head maps each latent frame's action features to a shift (rows, columns) and a log-zoom, summed over the
chunk: frame j's motion since the history. A token then attends to the history as if it stood where the
camera's motion brought its content from. Self-attention can copy from a moved position at once, where
learning the motion from an added embedding alone takes far more data than a CPU run sees. The head starts
at zero, so a fresh one moves nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import zero_


class ViewMotion(nn.Module):
    def __init__(self, unified_dim: int) -> None:
        super().__init__()
        # (row shift, column shift, log-zoom) per latent frame.
        self.head = nn.Linear(unified_dim, 3)
        zero_(self.head)

    def forward(self, features: torch.Tensor, weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Offsets `[B, F, height * width, 2]` (rows, columns) of frame j's tokens, summed over frames 0..j.

        A token at (r, c) moves by `((r - r_mid) (e^s - 1) + shift_r, (c - c_mid) (e^s - 1) + shift_c)`, with
        `s` the log-zoom so far: zoom about the image centre, then shift.

        Args:
            features: `[B, F, unified_dim]` action features per latent frame.
            weight: `[B, F, 1]` how much of each frame's features the router kept (0 where the actions
                were dropped, so those samples do not move).
        """
        motion = weight * self.head(features)
        shift_r, shift_c, zoom = motion.cumsum(dim=1)[..., None, None].unbind(dim=2)
        rows = torch.arange(height, dtype=motion.dtype, device=motion.device).view(height, 1) - (height - 1) / 2
        cols = torch.arange(width, dtype=motion.dtype, device=motion.device).view(1, width) - (width - 1) / 2
        scale = zoom.exp() - 1
        grid = (*scale.shape[:2], height, width)
        dr, dc = (rows * scale + shift_r).expand(grid), (cols * scale + shift_c).expand(grid)
        return torch.stack([dr, dc], dim=-1).flatten(2, 3)
