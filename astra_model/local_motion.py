"""The local motion head (ours, `extensions.local_motion`): per-token motion of the generated tokens' rotary
positions, for small movers in a still view.

The motion head (`astra_model.view_motion`) shifts and zooms the whole view, which is how a driving or
flying camera's image moves. A fixed camera watching an arm sees the commands move a few tokens and leave
the rest still, and self-attention can only copy the arm from where it was if each of those queries looks
up the history somewhere else. This head gives every generated token its own (row, column) offset per latent
frame from:
- the latest history frame's latents at the token and its eight neighbours (is this the arm, which
  link, or table?);
- the token's image coordinates (x, y in [-1, 1]);
- that latent frame's action features (MoAE's unified space).

Offsets are summed over the chunk, as the view's are. The last layer starts at zero, so a fresh
head moves nothing and the model reproduces one without it exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .init import zero_

NEIGHBOURHOOD = 3  # tokens per side of the window read around each token


class LocalMotion(nn.Module):
    def __init__(self, latent_channels: int, unified_dim: int, hidden: int = 64) -> None:
        super().__init__()
        # A token covers 2x2 latent pixels (Wan's patch), so its window holds 4 C values per token.
        window = 4 * latent_channels * NEIGHBOURHOOD**2
        self.net = nn.Sequential(nn.Linear(window + 2 + unified_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2))
        zero_(self.net[-1])

    def forward(self, latest: torch.Tensor, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Offsets `[B, F, S, 2]` (rows, columns) of frame j's tokens, summed over frames 0..j.

        Args:
            latest: `[B, C, h, w]` latents of the latest history frame (`S = h/2 * w/2` tokens).
            features: `[B, F, unified_dim]` action features per latent frame.
            weight: `[B, F, 1]` how much of each frame's features the router kept (0 where the actions
                were dropped, so those samples do not move).
        """
        b, f = features.shape[:2]
        tokens = F.pixel_unshuffle(latest.to(features.dtype), 2)  # [B, 4C, h/2, w/2]
        rows, cols = tokens.shape[-2:]
        window = F.unfold(tokens, NEIGHBOURHOOD, padding=NEIGHBOURHOOD // 2).transpose(1, 2)  # [B, S, 9 * 4C]
        y = torch.linspace(-1, 1, rows, dtype=features.dtype, device=features.device)
        x = torch.linspace(-1, 1, cols, dtype=features.dtype, device=features.device)
        coords = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1).reshape(1, 1, rows * cols, 2)
        s = rows * cols
        inputs = torch.cat(
            [
                window[:, None].expand(b, f, s, -1),
                coords.expand(b, f, s, 2),
                features[:, :, None].expand(b, f, s, -1),
            ],
            dim=-1,
        )
        return (self.net(inputs) * weight[:, :, None]).cumsum(dim=1)
