"""Training data on the latent side: video episodes encoded once by the VAE, cut into history + chunk clips.

An episode is uint8 frames `[T, H, W, 3]` with, per modality, the action that *produced* each frame
(`[T, D]`; row 0 is never used). Latents are cached on disk keyed by the episode content and the VAE
weights, so epochs after the first are cheap. A clip is what one rollout step sees: the latent frames
before `j0` as history (true indices, trimmed to the memory layout) and latents `j0 .. j0+F-1` as target.

Counterfactual branches (episodes that share their first frames, then part under other commands, as
`datagen --branches` records) are found from the latents themselves. `sample(..., parting_prob=p)`
starts a batch, with probability p, at the latent frame where one such family parts: one history,
several futures that only the commands tell apart (a `ClipBatch` with `family=True`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .actions import as_model_reads, latent_frame_commands
from .config import AstraConfig
from .history import History
from .vae import VAEStream, frames_to_video


@dataclass
class VideoEpisode:
    """uint8 frames `[T, H, W, 3]` and, per modality recorded, the actions that produced them `[T, D]`."""

    frames: np.ndarray
    actions: dict[str, np.ndarray]
    name: str


def produced_by(actions_at_frames: np.ndarray) -> np.ndarray:
    """Shift zero-order-hold samples so row t is the command that produced frame t (issued at frame t-1)."""
    out = np.empty_like(actions_at_frames)
    out[1:] = actions_at_frames[:-1]
    out[0] = actions_at_frames[0]
    return out


def _fingerprint(*arrays: np.ndarray | torch.Tensor) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a).tobytes())
    return digest.hexdigest()[:20]


@dataclass
class Parting:
    """Episodes (indices into `LatentClips.episodes`) equal up to latent frame `frame`, which differs."""

    members: list[int]
    frame: int


@dataclass
class ClipBatch:
    """A training batch of clips.

    Attributes:
        history: the clean history of each clip.
        target: `[B, C, F, h, w]` latents of the chunk to generate.
        actions: modality -> `[B, F * temporal_ratio, D]` commands of the chunk, per video frame.
        family: every clip starts where one family of branches parts, so all share one history.
    """

    history: History
    target: torch.Tensor
    actions: dict[str, torch.Tensor]
    family: bool


@dataclass
class LatentEpisode:
    latents: torch.Tensor  # [C, L, h, w]
    actions: dict[str, torch.Tensor]  # per video frame [1 + 4 (L - 1), D], as the model reads them
    name: str


class LatentClips:
    """Episodes as cached VAE latents, sampled as training clips."""

    def __init__(self, episodes: list[VideoEpisode], vae, config: AstraConfig, cache_dir: str | Path | None) -> None:
        self.config = config
        vae_key = _fingerprint(*vae.state_dict().values())
        self.episodes = [self._encode(ep, vae, cache_dir, vae_key) for ep in episodes]
        shortest = min(ep.latents.shape[1] for ep in self.episodes)
        if shortest < 1 + config.chunk_latent_frames:
            raise ValueError(
                f"episodes need at least {1 + config.chunk_latent_frames} latent frames, shortest has {shortest}"
            )
        self.partings = self._find_partings()

    def _find_partings(self) -> dict[str, list[Parting]]:
        """Per modality, the families of episodes with that modality and the same first latent frame, and
        where they part."""
        families: dict[tuple, list[int]] = {}
        for i, ep in enumerate(self.episodes):
            key = (tuple(sorted(ep.actions)), _fingerprint(ep.latents[:, :1]))
            families.setdefault(key, []).append(i)
        f = self.config.chunk_latent_frames
        out: dict[str, list[Parting]] = {}
        for (modalities, _), members in families.items():
            if len(members) < 2:
                continue
            first = self.episodes[members[0]].latents
            frame = min(self._first_difference(first, self.episodes[m].latents) for m in members[1:])
            if 1 <= frame <= min(self.episodes[m].latents.shape[1] for m in members) - f:
                for modality in modalities:
                    out.setdefault(modality, []).append(Parting(members, frame))
        return out

    @staticmethod
    def _first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
        n = min(a.shape[1], b.shape[1])
        differs = (a[:, :n] != b[:, :n]).flatten(2).any(dim=2).any(dim=0).nonzero()
        return int(differs[0]) if len(differs) else n

    def _encode(self, ep: VideoEpisode, vae, cache_dir, vae_key: str) -> LatentEpisode:
        ratio = self.config.temporal_ratio
        usable = 1 + ratio * ((len(ep.frames) - 1) // ratio)
        frames = ep.frames[:usable]
        path = Path(cache_dir) / f"{_fingerprint(frames)}-{vae_key}.safetensors" if cache_dir else None
        if path is not None and path.is_file():
            latents = load_file(str(path))["latents"]
        else:
            with torch.no_grad():
                latents = VAEStream(vae).encode(frames_to_video(torch.from_numpy(frames)[None]))[0].float()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"latents": latents.contiguous()}, str(path))
        actions = {k: torch.from_numpy(v[:usable]).float()[None] for k, v in ep.actions.items()}
        actions = {k: v[0] for k, v in as_model_reads(actions, self.config).items()}
        return LatentEpisode(latents, actions, ep.name)

    def modalities(self) -> list[str]:
        return sorted({m for ep in self.episodes for m in ep.actions})

    def sample(self, batch: int, modality: str, rng: np.random.Generator, parting_prob: float = 0.0) -> ClipBatch:
        """A batch of clips from episodes of `modality`.

        With probability `parting_prob` (and a family of branches of `modality` to draw from) the batch
        starts where one family of branches parts, its clips drawn from that family's members."""
        pool = [ep for ep in self.episodes if modality in ep.actions]
        if not pool:
            raise ValueError(f"no episode has actions of modality {modality!r}")
        f, ratio = self.config.chunk_latent_frames, self.config.temporal_ratio
        partings = self.partings.get(modality, [])
        family = parting_prob > 0 and bool(partings) and rng.random() < parting_prob
        if family:
            parting = partings[int(rng.integers(0, len(partings)))]
            chosen = [self.episodes[parting.members[i]] for i in rng.integers(0, len(parting.members), size=batch)]
            j0 = parting.frame
        else:
            chosen = [pool[i] for i in rng.integers(0, len(pool), size=batch)]
            j0 = int(rng.integers(1, min(ep.latents.shape[1] for ep in chosen) - f + 1))
        first = 1 + ratio * (j0 - 1)  # first video frame of latent frame j0
        past = {}
        if self.config.history.with_actions:
            commands = [latent_frame_commands(ep.actions[modality][:first], self.config) for ep in chosen]
            past[modality] = torch.stack(commands)
        history = History(torch.stack([ep.latents[:, :j0] for ep in chosen]), torch.arange(j0), past)
        history = history.trimmed(self.config.history)
        target = torch.stack([ep.latents[:, j0 : j0 + f] for ep in chosen])
        acts = torch.stack([ep.actions[modality][first : first + f * ratio] for ep in chosen])
        return ClipBatch(history, target, {modality: acts}, family)


def action_stats(episodes: list[VideoEpisode], config: AstraConfig) -> dict[str, dict[str, list[float]]]:
    """Per modality, mean and std of each action element as the model reads it, over every frame a
    command produced (row 0 of an episode produced none); an element that never changes gets std 1."""
    stats = {}
    for name in sorted({m for ep in episodes for m in ep.actions}):
        read = [
            as_model_reads({name: torch.from_numpy(ep.actions[name][None]).float()}, config)[name][0, 1:]
            for ep in episodes
            if name in ep.actions
        ]
        values = torch.cat(read).double()
        std = values.std(dim=0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        stats[name] = {"mean": values.mean(dim=0).tolist(), "std": std.tolist()}
    return stats


def random_frame_clips(episodes: list[VideoEpisode], batch: int, frames: int, rng: np.random.Generator) -> torch.Tensor:
    """Random `[B, 3, frames, H, W]` video clips in [-1, 1] (for VAE training)."""
    clips = []
    for i in rng.integers(0, len(episodes), size=batch):
        ep = episodes[i].frames
        s = int(rng.integers(0, len(ep) - frames + 1))
        clips.append(torch.from_numpy(ep[s : s + frames]))
    return frames_to_video(torch.stack(clips))
