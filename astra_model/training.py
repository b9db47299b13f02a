"""Training helpers: Astra's flow-matching objective with noise-augmented history and action dropout.

- Flow matching: `x_t = (1 - sigma) * x0 + sigma * noise`, target velocity `noise - x0`, timestep
  `1000 * sigma` with sigma drawn uniformly and shifted like the sampler's grid. `x0` is the chunk's
  clean latents, or in a `predict_change` world their change since the latest (clean) history frame.
- Noise augmentation: with probability `noise_aug.prob` a sample's 1x history slots (first and latest
  frame) are noised to a random sigma in `[sigma_min, sigma_max]`. The model is not told the level, so
  it learns not to copy the history ("visual inertia").
- Action dropout: with probability `action_dropout` a sample's actions are dropped, which trains the
  action-free branch that action-free guidance needs.
- Family term (ours, not the paper's; off by default): in a batch whose clips share one history and
  part under different commands, one sigma, one noise and one history augmentation serve every clip.
  The clips' residuals (prediction - target) then differ only through what the commands decide, and
  `family_weight` x their variance across the batch is added. The flow loss already contains that
  variance once (mean of squares = variance + square of the mean); the weight raises its share against
  the error the clips have in common, which at small budgets drowns the commands' signal.
- Motion weighting (ours, not the paper's; off by default): in a family batch each latent position's
  squared error is weighted by `1 + motion_weight * c / mean(c)`, normalised to mean 1 per sample and
  then averaged over the family, where `c` is how much the clean latent changed since the frame
  before (the history's latest frame for the chunk's first). A small mover in a still scene (the arm
  world) owns a few tokens of a plain mean and with them almost none of the loss, although it is all
  the commands decide. One map serves the whole family: weights taken from a clip's own target favour
  the targets that moved, so the weighted optimum is no longer the mean and the model paints motion
  that is not there (measured: texture where the arm should be); a map shared by every future of one
  history only says where to look. Other batches are not weighted.
- Warp term (ours, not the paper's; off by default): the motion heads move each chunk token's rotary
  position, so that it reads the history where its content was. Moving the latest history frame's
  tokens the same way (bilinear, in token units) should then give the chunk's clean tokens, and
  `warp_weight` x the mean squared error of that warp is added. It is a direct, low-noise target for
  where the commands move things; through the flow loss alone the heads learn that only as far as
  attention happens to use it.
- Render term (ours, not the paper's; off by default): with `moae.field_render` the action field's
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
from torch.nn import functional as F

from .action_field import latent_tokens, token_grid
from .config import NoiseAugConfig
from .history import History, slot_layout
from .model import AstraWorldModel


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift of Wan/SD3 flow matching: more time at high noise for shift > 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def noise_augment_history(
    history: History, cfg: NoiseAugConfig, layout, generator: torch.Generator | None = None, shared: bool = False
) -> History:
    """A copy of `history` whose 1x slots are noised per sample with probability `cfg.prob`
    (`shared`: one draw for the whole batch)."""
    latents = history.latents.clone()
    b = latents.shape[0]
    one_x = torch.tensor(slot_layout(history.length, layout).x1)
    if len(one_x) == 0:
        return history.with_latents(latents)
    n = 1 if shared else b
    chosen = torch.rand(n, generator=generator) < cfg.prob
    sigma = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * torch.rand(n, generator=generator)
    sigma = (sigma * chosen).to(latents).view(n, 1, 1, 1, 1)
    target = latents[:, :, one_x]
    noise = torch.randn((n, *target.shape[1:]), generator=generator).to(latents)
    latents[:, :, one_x] = (1 - sigma) * target + sigma * noise
    return history.with_latents(latents)


@dataclass
class LossTerms:
    total: torch.Tensor
    flow: torch.Tensor  # plain mean squared error of the velocity (unweighted, so runs compare)
    load_balance: torch.Tensor
    family: torch.Tensor  # variance of the residuals across a family batch (0 otherwise)
    warp: torch.Tensor  # error of the latest history frame moved by the motion heads (0 without them)
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
    family_weight: float = 0.0,
    motion_weight: float = 0.0,
    warp_weight: float = 0.0,
    field_render_weight: float = 0.0,
    pair_weight: float = 0.0,
    shift: float | None = None,
) -> LossTerms:
    """Astra's training loss on a batch of chunks.

    Args:
        target_latents: clean latents `[B, C, F, h, w]` of the chunk to generate.
        history: clean history latents of the same samples.
        actions: modality -> `[B, F * temporal_ratio, D]` per-video-frame actions.
        forward: the module to call, when `model` is wrapped (e.g. DistributedDataParallel).
        family: the batch's samples share one history (they start where a family of branches parts).
        family_weight: weight of the family term, in a family batch (see the module docstring).
        motion_weight: > 0 weights the error where a family's clean latents change (see the module docstring).
        warp_weight: weight of the warp term (see the module docstring).
        field_render_weight: weight of the render term (see the module docstring).
        pair_weight: weight of the pair term, in a family batch (see the module docstring).
        shift: timestep shift of the drawn sigmas; None draws them as the sampler's grid is shifted.
    """
    cfg = model.config
    b = target_latents.shape[0]
    shared = family and family_weight > 0
    n = 1 if shared else b
    shift = cfg.sampler.shift if shift is None else shift
    sigma = shift_sigma(torch.rand(n, generator=generator), shift).to(target_latents).expand(b)
    noise = torch.randn((n, *target_latents.shape[1:]), generator=generator).to(target_latents)
    s = sigma.view(b, 1, 1, 1, 1)
    reference = model.change_reference(actions, history)
    clean = target_latents if reference is None else target_latents - reference
    noisy = (1 - s) * clean + s * noise
    weights = motion_weights(target_latents, history, motion_weight) if family and motion_weight > 0 else None
    latest = history.latents[:, :, -1] if history is not None else None  # clean: the warp follows the world
    if history is not None and noise_augmentation:
        history = noise_augment_history(history, cfg.noise_aug, cfg.history, generator, shared=shared)
    mask = None
    if actions and action_dropout:
        mask = (torch.rand(b, generator=generator) >= cfg.action_dropout).to(target_latents.device)
    out = (forward or model)(noisy, sigma * 1000, actions, history, action_mask=mask)
    residual = out.velocity.float() - (noise - clean).float()
    squared = residual.square()
    flow = squared.mean()
    weighted = flow if weights is None else (weights * squared).mean()
    spread = _family_spread(residual, mask) if shared else flow.new_zeros(())
    warp = flow.new_zeros(())
    if out.motion_offsets is not None and latest is not None:
        warp = warp_error(latest, target_latents, out.motion_offsets, mask)
    render = flow.new_zeros(())
    if out.field_render is not None:
        render = render_error(target_latents, out.field_render, mask)
    pair = flow.new_zeros(())
    if family:
        pair = pair_error(noisy - s * out.velocity, clean, mask)
    lb = cfg.moae.load_balance_weight * out.load_balance_loss
    extra = family_weight * spread + warp_weight * warp + field_render_weight * render + pair_weight * pair
    return LossTerms(weighted + lb + extra, flow, out.load_balance_loss, spread, warp, render, pair)


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


def warp_error(
    latest: torch.Tensor, target_latents: torch.Tensor, offsets: torch.Tensor, kept: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between the chunk's clean tokens and the latest history frame's tokens read
    where the motion heads point each chunk token (its position plus its offset, bilinear, clamped at
    the border), over the samples that kept their actions.

    Args:
        latest: `[B, C, h, w]` clean latents of the latest history frame.
        target_latents: `[B, C, F, h, w]` clean latents of the chunk.
        offsets: `[B, F * h/2 * w/2, 3]` (frame, row, column) offsets, `AstraOutput.motion_offsets`.
        kept: `[B]` bool, False for samples whose actions were dropped.
    """
    b, _, f, h, w = target_latents.shape
    rows, cols = h // 2, w // 2
    shift = offsets[..., 1:].float().reshape(b * f, rows, cols, 2)
    r = torch.arange(rows, dtype=shift.dtype, device=shift.device).view(rows, 1) + shift[..., 0]
    q = torch.arange(cols, dtype=shift.dtype, device=shift.device).view(1, cols) + shift[..., 1]
    grid = torch.stack([2 * q / (cols - 1) - 1, 2 * r / (rows - 1) - 1], dim=-1)  # grid_sample wants (x, y)
    source = token_grid(latest.unsqueeze(2).float()).repeat_interleave(f, dim=0)
    warped = F.grid_sample(source, grid, align_corners=True, padding_mode="border")
    error = (warped - token_grid(target_latents.float())).square().mean(dim=(1, 2, 3)).view(b, f)
    return _mean_over_kept(error, kept)


def motion_weights(target_latents: torch.Tensor, history: History | None, strength: float) -> torch.Tensor:
    """`[B, 1, F, h, w]` loss weights for a family batch: one map for every sample, mean 1, rising with
    each latent position's change since the frame before, averaged over the family's futures (`history`
    must be clean: the weights follow the world, not the augmentation)."""
    target = target_latents.float()
    before = target[:, :, :1] if history is None else history.latents[:, :, -1:].to(target)
    change = (target - torch.cat([before, target[:, :, :-1]], dim=2)).square().mean(dim=1, keepdim=True)
    relative = change / change.mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-12)
    # Dividing by the mean weight (1 + strength, or 1 where nothing moved) keeps each sample's loss scale.
    own = (1 + strength * relative) / (1 + strength * relative.mean(dim=(1, 2, 3, 4), keepdim=True))
    return own.mean(dim=0, keepdim=True).expand_as(own)


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


def _family_spread(residual: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared deviation of the residuals `[B, ...]` from their batch mean, over samples that kept
    their actions (a dropped sample's prediction cannot depend on its commands)."""
    kept = residual if mask is None else residual[mask]
    if len(kept) < 2:
        return residual.new_zeros(())
    return (kept - kept.mean(dim=0, keepdim=True)).square().mean()
