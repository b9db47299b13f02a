"""Pose warp (ours, not the paper's): a moving camera's latest frame, turned by the commanded rotation.

A camera that only rotates sees its last frame moved by a homography fixed by the rotation and its field
of view; translation adds parallax, which this leaves to the model. Camera-controlled video generators
condition on such reprojected views of what was last seen. With `config.extensions.pose_warp = {modality:
vertical field of view in degrees}`, each chunk commanded by that `relative_poses` modality gets the latest history
latent frame warped, for each of its latent frames, by the rotation since that history frame, plus a
channel saying where the warp saw anything. A zero-initialised patch embedding adds it to the chunk's
tokens, so an untrained warp leaves the model exactly as it was. Samples whose actions are dropped (the
action-free branch of guidance) get none of it: the warp carries the commands.

Axes are those of `astra_model.poses` and REP 103: the camera body looks along +x, +y is left, +z up.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from torch import nn

from .init import zero_


def cumulative_rotations(relative_poses: torch.Tensor, group: int) -> torch.Tensor:
    """`[B, N, 7]` poses, each relative to the one before, -> `[B, N / group, 3, 3]` rotation matrices of
    the last pose of each group of `group` frames relative to the pose before the first frame."""
    b, n = relative_poses.shape[:2]
    quats = relative_poses[..., 3:].detach().cpu().double().numpy().reshape(-1, 4)
    steps = Rotation.from_quat(quats).as_matrix().reshape(b, n, 3, 3)
    totals = np.empty_like(steps)
    total = np.broadcast_to(np.eye(3), (b, 3, 3))
    for k in range(n):
        total = total @ steps[:, k]
        totals[:, k] = total
    return torch.from_numpy(totals[:, group - 1 :: group].copy())


def rotation_grid(rotations: torch.Tensor, fov_deg: float, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of a view turned by `rotations` `[B, F, 3, 3]` looks in the unturned view.

    Returns:
        `grid_sample` coordinates `[B, F, h, w, 2]` (x right, y down, in [-1, 1] across the view with
        `align_corners=False`) and `[B, F, h, w]` bool, True where that ray lands inside the unturned view.
    """
    focal = (h / 2) / math.tan(math.radians(fov_deg) / 2)
    v, u = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
    rays = torch.stack([torch.full_like(u, focal), -u, -v], dim=-1).double()  # body axes, pixel units
    seen = torch.einsum("bfij,hwj->bfhwi", rotations.double(), rays)
    ahead = seen[..., 0] > 1e-6
    depth = seen[..., 0].clamp_min(1e-6)
    x = -seen[..., 1] / depth * focal / (w / 2)
    y = -seen[..., 2] / depth * focal / (h / 2)
    inside = ahead & (x.abs() <= 1) & (y.abs() <= 1)
    return torch.stack([x, y], dim=-1).float(), inside


def turned(images: torch.Tensor, rotations: torch.Tensor, fov_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`images` `[B, C, h, w]` seen by a camera turned by `rotations` `[B, F, 3, 3]` (bilinear).

    Returns:
        `[B, C, F, h, w]`, zero where the turned view looks outside the old one, and `[B, 1, F, h, w]`,
        1 where it looks inside, else 0 (in `images`' dtype).
    """
    b, c, h, w = images.shape
    grid, inside = rotation_grid(rotations, fov_deg, h, w)
    f = grid.shape[1]
    frames = F.grid_sample(
        images.repeat_interleave(f, dim=0),
        grid.reshape(b * f, h, w, 2).to(images),
        mode="bilinear",
        align_corners=False,
    )
    seen = inside.reshape(b, f, 1, h, w).transpose(1, 2).to(images)
    return frames.reshape(b, f, c, h, w).transpose(1, 2) * seen, seen


class PoseWarp(nn.Module):
    """A pose modality's warp of the latest history frame, as chunk tokens.

    Args:
        channels: latent channels.
        dim: transformer width.
        fov_deg: the camera's vertical field of view.
    """

    def __init__(self, channels: int, dim: int, fov_deg: float) -> None:
        super().__init__()
        self.fov_deg = fov_deg
        # Wan's patch size over the warped latents and the channel saying where they are valid.
        self.embed = nn.Conv3d(channels + 1, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        zero_(self.embed)

    def warped(self, latest: torch.Tensor, relative_poses: torch.Tensor, group: int) -> torch.Tensor:
        """`latest` `[B, C, h, w]` seen through each latent frame's rotation -> `[B, C + 1, F, h, w]`: the
        warped latents (zero outside the old view), then 1 where the old view was seen, else 0."""
        frames, seen = turned(latest.float(), cumulative_rotations(relative_poses, group), self.fov_deg)
        return torch.cat([frames, seen], dim=1).to(latest.dtype)

    def forward(
        self, latest: torch.Tensor, relative_poses: torch.Tensor, group: int, keep: torch.Tensor | None
    ) -> torch.Tensor:
        """Chunk tokens `[B, F * h/2 * w/2, dim]` (frame-major, like the patch embedding's) to add; `keep`
        `[B]` bool, False for samples whose actions are dropped, which get zeros."""
        tokens = self.embed(self.warped(latest, relative_poses, group).to(self.embed.weight.dtype))
        tokens = tokens.flatten(2).transpose(1, 2)
        return tokens if keep is None else tokens * keep.to(tokens.dtype).view(-1, 1, 1)
