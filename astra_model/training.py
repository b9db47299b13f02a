"""Training helpers: Astra's flow-matching objective with noise-augmented history and action dropout.

- Flow matching: `x_t = (1 - sigma) * x0 + sigma * noise`, target velocity `noise - x0`, timestep
  `1000 * sigma` with sigma drawn uniformly and shifted like the sampler's grid; `x0` is the chunk's
  clean latents.
- Noise augmentation: with probability `noise_aug.prob` a sample's 1x history slots (first and latest
  frame) are noised to a random sigma in `[sigma_min, sigma_max]`. The model is not told the level, so
  it learns not to copy the history ("visual inertia").
- Action dropout: with probability `action_dropout` a sample's actions are dropped, which trains the
  action-free branch that action-free guidance needs.
- Family batch: a batch whose clips share one history and part under different commands (training data
  with counterfactual branches, `parting_prob`); only the commands tell its futures apart.
- Render term (ours, not the paper's; off by default): with `extensions.action_field.render` the action field's
  renderer predicts each chunk token's clean latent from the commands and the token's place in the
  image, and `field_render_weight` x the mean squared error of that prediction is added. It is a direct
  target for what the commands put where (in a fixed camera's view: which tokens the links cover), which
  the field otherwise learns only through what the frozen network downstream makes of it.
- Pair term (ours, not the paper's; off by default): in a family batch, each clip's predicted clean
  latents `x0_hat = x_t - sigma * v_hat` are compared with every other clip's future. The part of the
  prediction's error `x_i - x0_hat_i` that points from its own future `x_i` towards another one `x_j`,
  `max(0, <x_i - x0_hat_i, x_i - x_j> / |x_i - x_j|)`, is squared and averaged over the ordered pairs
  whose futures differ (per latent element, as the flow loss), and `pair_weight` x that is added. A
  rollout follows its commands when each of a pair's predictions is nearer its own future, and only this
  direction of the error decides that: where two futures barely differ, the error both predictions share
  decides it, and a plain mean of squares gives that one direction a 1/N share. The term is one-sided, so
  it never asks a prediction to stay short of its own future, only not to fall back towards another one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .action_field import latent_tokens
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
    flow: torch.Tensor  # plain mean squared error of the velocity (unweighted, so runs compare)
    load_balance: torch.Tensor
    render: torch.Tensor  # error of the action field's renderer on the clean chunk (0 without one)
    pair: torch.Tensor  # error of a family batch's predictions towards the other futures (0 otherwise)


def flow_matching_loss(
    model: AstraWorldModel,
    target_latents: torch.Tensor,
    history: History | None,
    actions: Mapping[str, torch.Tensor] | None,
    generator: torch.Generator | None = None,
    noise_augmentation: bool = True,
    action_dropout: bool = True,
    forward: torch.nn.Module | None = None,
    family: bool = False,
    field_render_weight: float = 0.0,
    pair_weight: float = 0.0,
) -> LossTerms:
    """Astra's training loss on a batch of chunks.

    Args:
        target_latents: clean latents `[B, C, F, h, w]` of the chunk to generate.
        history: clean history latents of the same samples.
        actions: modality -> `[B, F * temporal_ratio, D]` per-video-frame actions.
        forward: the module to call, when `model` is wrapped (e.g. DistributedDataParallel).
        family: the batch's samples share one history (they start where a family of branches parts).
        field_render_weight: weight of the render term (see the module docstring).
        pair_weight: weight of the pair term, in a family batch (see the module docstring).
    """
    cfg = model.config
    b = target_latents.shape[0]
    # Drawn as the sampler's grid is shifted, so training spends its steps at the noise levels sampling visits.
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
    flow = (out.velocity.float() - (noise - target_latents).float()).square().mean()
    render = flow.new_zeros(())
    if out.field_render is not None:
        render = render_error(target_latents, out.field_render, mask)
    pair = flow.new_zeros(())
    if family:
        pair = pair_error(noisy - s * out.velocity, target_latents, mask)
    lb = cfg.moae.load_balance_weight * out.load_balance_loss
    extra = field_render_weight * render + pair_weight * pair
    return LossTerms(flow + lb + extra, flow, out.load_balance_loss, render, pair)


def _mean_over_kept(error: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample errors `[B, ...]` over the samples that kept their actions (0 if none did)."""
    if kept is not None:
        error = error[kept.bool()]
    return error.mean() if error.numel() else error.new_zeros(())


def render_error(
    target_latents: torch.Tensor, rendered: torch.Tensor, kept: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between the action field's render `[B, F * h/2 * w/2, 4 C]` (`AstraOutput.field_render`)
    and the chunk's clean latents `[B, C, F, h, w]`, over the samples that kept their actions (`kept` `[B]`)."""
    return _mean_over_kept((rendered.float() - latent_tokens(target_latents.float())).square(), kept)


def pair_error(predicted: torch.Tensor, clean: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """The pair term of a family batch: over ordered pairs (i, j) of samples whose clean latents differ, the
    mean of `max(0, <x_i - p_i, x_i - x_j> / |x_i - x_j|)^2 / N`, with `p` the predicted and `x` the clean
    latents `[B, C, F, h, w]` and N the elements per sample; only samples that kept their actions (`kept`
    `[B]`) count, and 0 where no pair differs."""
    x, p = clean.float().flatten(1), predicted.float().flatten(1)
    if kept is not None:
        x, p = x[kept.bool()], p[kept.bool()]
    apart = x[:, None] - x[None]  # [B, B, N]: x_i - x_j
    distance = apart.norm(dim=-1)
    differ = distance > 0
    if not differ.any():
        return clean.new_zeros((), dtype=torch.float32)
    towards = ((x - p)[:, None] * apart).sum(dim=-1) / distance.clamp_min(torch.finfo(x.dtype).tiny)
    return towards.clamp_min(0)[differ].square().mean() / x.shape[1]
