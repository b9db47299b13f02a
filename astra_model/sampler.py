"""Flow-matching Euler sampling of one chunk with action-free guidance (AFG).

With velocity target `noise - x0`, each step moves `x += (sigma_next - sigma) * v`. AFG mixes the
action-conditioned and action-free predictions: `v = v_free + s * (v_act - v_free)`; both come from one
batched forward pass. The timestep grid (and its shift) is diffusers' `FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .pieces import Pieces

# velocity(x [N, C, F, h, w], timestep [N], action_mask [N] bool or None) -> [N, C, F, h, w]
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def uses_guidance(guidance_scale: float, has_actions: bool) -> bool:
    """AFG needs a second branch only when it changes the result: scale 0 disables it and scale 1
    equals the conditional prediction."""
    return has_actions and guidance_scale not in (0.0, 1.0)


@torch.no_grad()
def denoising(
    velocity: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float,
    guidance_scale: float,
    has_actions: bool,
) -> Pieces[torch.Tensor]:
    """Denoise `noise` `[B, C, F, h, w]` from sigma 1 to 0 in `steps` Euler steps, in pieces
    (`astra_model.pieces`), one Euler step each; `run_to_end` returns the clean latents."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(steps, device=noise.device)
    guided = uses_guidance(guidance_scale, has_actions)
    b = noise.shape[0]
    x = noise
    for t in scheduler.timesteps:
        if guided:
            mask = torch.arange(2 * b, device=x.device) < b
            v_act, v_free = velocity(torch.cat([x, x]), t.expand(2 * b), mask).chunk(2)
            v = v_free + guidance_scale * (v_act - v_free)
        else:
            v = velocity(x, t.expand(b), None)
        x = scheduler.step(v, t, x).prev_sample
        yield
    return x
