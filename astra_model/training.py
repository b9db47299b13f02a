"""Training helpers: Astra's flow-matching objective with noise-augmented history and action dropout.

- Flow matching: `x_t = (1 - sigma) * x0 + sigma * noise`, target velocity `noise - x0`, timestep
  `1000 * sigma` with sigma drawn uniformly and shifted like the sampler's grid.
- Noise augmentation: with probability `noise_aug.prob` a sample's 1x history slots (first and latest
  frame) are noised to a random sigma in `[sigma_min, sigma_max]`. The model is not told the level, so
  it learns not to copy the history ("visual inertia").
- Action dropout: with probability `action_dropout` a sample's actions are dropped, which trains the
  action-free branch that action-free guidance needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .config import NoiseAugConfig
from .history import History, slot_layout
from .model import AstraWorldModel


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift of Wan/SD3 flow matching: more time at high noise for shift > 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def noise_augment_history(
    history: History, cfg: NoiseAugConfig, layout, generator: torch.Generator | None = None
) -> History:
    """A copy of `history` whose 1x slots are noised per sample with probability `cfg.prob`."""
    latents = history.latents.clone()
    b = latents.shape[0]
    one_x = torch.tensor(slot_layout(history.length, layout).x1)
    if len(one_x) == 0:
        return history.with_latents(latents)
    chosen = torch.rand(b, generator=generator) < cfg.prob
    sigma = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * torch.rand(b, generator=generator)
    sigma = (sigma * chosen).to(latents).view(b, 1, 1, 1, 1)
    target = latents[:, :, one_x]
    noise = torch.randn(target.shape, generator=generator).to(latents)
    latents[:, :, one_x] = (1 - sigma) * target + sigma * noise
    return history.with_latents(latents)


@dataclass
class LossTerms:
    total: torch.Tensor
    flow: torch.Tensor
    load_balance: torch.Tensor


def flow_matching_loss(
    model: AstraWorldModel,
    target_latents: torch.Tensor,
    history: History | None,
    actions: Mapping[str, torch.Tensor] | None,
    generator: torch.Generator | None = None,
    noise_augmentation: bool = True,
    action_dropout: bool = True,
    forward: torch.nn.Module | None = None,
) -> LossTerms:
    """Astra's training loss on a batch of chunks.

    Args:
        target_latents: clean latents `[B, C, F, h, w]` of the chunk to generate.
        history: clean history latents of the same samples.
        actions: modality -> `[B, F * temporal_ratio, D]` per-video-frame actions.
        forward: the module to call, when `model` is wrapped (e.g. DistributedDataParallel).
    """
    cfg = model.config
    b = target_latents.shape[0]
    sigma = shift_sigma(torch.rand(b, generator=generator), cfg.sampler.shift).to(target_latents)
    noise = torch.randn(target_latents.shape, generator=generator).to(target_latents)
    s = sigma.view(b, 1, 1, 1, 1)
    noisy = (1 - s) * target_latents + s * noise
    if history is not None and noise_augmentation:
        history = noise_augment_history(history, cfg.noise_aug, cfg.history, generator)
    mask = None
    if actions and action_dropout:
        mask = (torch.rand(b, generator=generator) >= cfg.action_dropout).to(target_latents.device)
    out = (forward or model)(noisy, sigma * 1000, actions, history, action_mask=mask)
    flow = torch.nn.functional.mse_loss(out.velocity.float(), (noise - target_latents).float())
    total = flow + cfg.moae.load_balance_weight * out.load_balance_loss
    return LossTerms(total, flow, out.load_balance_loss)
