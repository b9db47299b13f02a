"""Anchored rendering: a fixed camera's rollout keeps the last true frame's detail where nothing moved.

A small VAE blurs what it reconstructs, the still background included. Under a fixed camera most of a
predicted frame is still the scene of the last true frame, so each decoded frame adds that frame's
reconstruction error (true frame - its reconstruction) wherever the prediction still matches the
reconstruction, fading out with a Gaussian falloff of `tolerance` grey levels where the prediction
changed. Robot video predictors composite their output with the last observed frame for the same
reason (e.g. CDNA, Finn et al. 2016). Only the frames shown change: the latents, the history and
everything the model predicts next stay its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Anchor:
    """The last true frame and the VAE's reconstruction of it, both `[B, 3, 1, H, W]` in [-1, 1]."""

    frame: torch.Tensor
    reconstruction: torch.Tensor

    def repeat(self, n: int) -> Anchor:
        """Each batch entry repeated `n` times (copies), as a session fork repeats its branches."""
        return Anchor(self.frame.repeat_interleave(n, dim=0), self.reconstruction.repeat_interleave(n, dim=0))

    def apply(self, video: torch.Tensor, tolerance: float) -> torch.Tensor:
        """Decoded frames `[B, 3, F, H, W]` in [-1, 1] with the anchor's detail where they match its
        reconstruction: exactly the true frame where they equal it, the decoded frame where they differ
        by many times `tolerance` grey levels (of 255)."""
        change = (video - self.reconstruction).abs().mean(dim=1, keepdim=True) * 127.5
        keep = torch.exp(-((change / tolerance) ** 2))
        return (video + keep * (self.frame - self.reconstruction)).clamp(-1.0, 1.0)
