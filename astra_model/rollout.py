"""Autoregressive rollouts: `model.start(frames)` then `session.step(actions)`, chunk by chunk.

A session owns the bounded history memory, the streaming VAE state and the random generator, so it is
deterministic for a given seed, cheap to snapshot, and can fork into a batch of counterfactual
rollouts. Forked branches share their noise (common random numbers): branches differ only because
their actions differ, which is what a planner comparing candidates wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .actions import as_model_reads, group_per_latent_frame, last_commands, latent_frame_commands, validate_actions
from .anchoring import Anchor
from .history import History
from .model import AstraWorldModel, KVCache
from .pieces import Pieces, run_to_end
from .sampler import denoising, uses_guidance
from .vae import VAEStream, frames_to_video, video_to_frames
from .worlds import fixed_camera_of, guidance_scale_of


@dataclass
class SessionState:
    """Everything a session needs to continue: restore it to branch again from this point.

    Attributes:
        anchor: the last true frame and its reconstruction, for the chunks of a fixed camera's world.
        last_commands: per `config.relative_poses` or `config.extensions.relative_commands` modality, the latest
            frame's command `[B, D]`, which the next chunk's first command is read relative to (absent
            while unknown).
    """

    history: History
    vae: VAEStream
    rng_state: torch.Tensor
    step_count: int
    anchor: Anchor
    last_commands: dict[str, torch.Tensor] = field(default_factory=dict)

    def copy(self, repeat: int = 1) -> SessionState:
        """An independent copy, each branch repeated `repeat` times: stepping from one never changes the other."""
        return SessionState(
            self.history.repeat(repeat),  # repeat_interleave copies, so this is a deep copy
            self.vae.copy(repeat=repeat),
            self.rng_state.clone(),
            self.step_count,
            self.anchor.repeat(repeat),
            {k: v.repeat_interleave(repeat, dim=0) for k, v in self.last_commands.items()},
        )

    def branch(self, index: int) -> SessionState:
        """Branch `index` alone, as a state of one branch (copies)."""
        pick = slice(index, index + 1)
        return SessionState(
            History(
                self.history.latents[pick].clone(),
                self.history.indices.clone(),
                {k: v[pick].clone() for k, v in self.history.actions.items()},
            ),
            self.vae.branch(index),
            self.rng_state.clone(),
            self.step_count,
            Anchor(self.anchor.frame[pick].clone(), self.anchor.reconstruction[pick].clone()),
            {k: v[pick].clone() for k, v in self.last_commands.items()},
        )

    def lines_up_with(self, other: SessionState) -> bool:
        """Whether the two can step as one batch: the same frames remembered, commands and decoder layout."""
        mine, theirs = (s.history for s in (self, other))
        return (
            torch.equal(mine.indices, theirs.indices)
            and mine.actions.keys() == theirs.actions.keys()
            and self.last_commands.keys() == other.last_commands.keys()
            and self.vae.lines_up_with(other.vae)
        )

    @staticmethod
    def stack(states: list[SessionState]) -> SessionState:
        """One batched state of states that line up (`lines_up_with`), branch i being states[i]; the
        first state's random generator comes along (batched episodes bring their own noise)."""
        first = states[0]
        if not all(first.lines_up_with(s) for s in states[1:]):
            raise ValueError("states that do not line up (other frames remembered or commands known) cannot stack")
        return SessionState(
            History(
                torch.cat([s.history.latents for s in states]),
                first.history.indices.clone(),
                {k: torch.cat([s.history.actions[k] for s in states]) for k in first.history.actions},
            ),
            VAEStream.stack([s.vae for s in states]),
            first.rng_state.clone(),
            first.step_count,
            Anchor(torch.cat([s.anchor.frame for s in states]), torch.cat([s.anchor.reconstruction for s in states])),
            {k: torch.cat([s.last_commands[k] for s in states]) for k in first.last_commands},
        )


def _as_frames(first_frames: np.ndarray, spatial: int) -> np.ndarray:
    frames = np.asarray(first_frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"first_frames must be uint8 [T, H, W, 3] or [H, W, 3], got {frames.dtype} {list(frames.shape)}"
        )
    h, w = frames.shape[1:3]
    if h % (2 * spatial) or w % (2 * spatial):
        raise ValueError(f"frame size {h}x{w} must be a multiple of {2 * spatial} (VAE stride x patch size)")
    return frames


def _seed_commands(
    commands: Mapping[str, np.ndarray] | None, given: int, model: AstraWorldModel
) -> dict[str, torch.Tensor]:
    """The checked per-frame commands `[1, given, D]` that produced the seed frames."""
    out = {}
    for name, value in (commands or {}).items():
        per_frame = torch.as_tensor(np.asarray(value, dtype=np.float32))
        dim = model.config.modalities.get(name)
        if dim is None:
            raise ValueError(f"unknown command modality {name!r}; this model knows {sorted(model.config.modalities)}")
        if per_frame.shape != (given, dim):
            raise ValueError(
                f"commands[{name!r}] must be [{given}, {dim}] (one per first frame: row t produced frame t), "
                f"got {list(per_frame.shape)}"
            )
        if not torch.isfinite(per_frame).all():
            raise ValueError(f"commands[{name!r}] contains NaN or infinite values")
        out[name] = per_frame[None].to(model.device)
    return out


class RolloutSession:
    """One (or a batch of forked) autoregressive rollout(s). Create with `AstraWorldModel.start`."""

    def __init__(self, model: AstraWorldModel, state: SessionState, batch_size: int) -> None:
        self.model = model
        self.state = state
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(0)
        self.generator.set_state(state.rng_state)
        self._undecoded = False

    @classmethod
    @torch.no_grad()
    def start(
        cls,
        model: AstraWorldModel,
        first_frames: np.ndarray,
        seed: int = 0,
        commands: Mapping[str, np.ndarray] | None = None,
    ) -> RolloutSession:
        given = _as_frames(first_frames, model.config.spatial_ratio)
        # The VAE encodes 1 + rk frames; keep the most recent frames that fit that pattern.
        frames = given[(len(given) - 1) % model.config.temporal_ratio :]
        vae = VAEStream(model.vae)
        video = frames_to_video(torch.from_numpy(frames)[None]).to(model.device)
        latents = vae.encode(video)
        # Decoding also warms the decoder's causal cache, so later chunks decode in context.
        anchor = Anchor(video[:, :, -1:], vae.decode(latents)[:, :, -1:])
        raw = _seed_commands(commands, len(given), model)
        past = as_model_reads({k: v[:, len(given) - len(frames) :] for k, v in raw.items()}, model.config)
        past = {k: latent_frame_commands(v[0], model.config)[None] for k, v in past.items()}
        history = History(latents, torch.arange(latents.shape[2]), past).trimmed(model.config.history)
        rng = torch.Generator().manual_seed(int(seed))
        last = last_commands(raw, model.config)
        return cls(model, SessionState(history, vae, rng.get_state(), 0, anchor, last), 1)

    # -- state -------------------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self.state.step_count

    @property
    def history_length(self) -> int:
        """Latent frames currently held in memory (bounded by the history layout's capacity)."""
        return self.state.history.length

    @property
    def frames_per_step(self) -> int:
        return self.model.config.frames_per_chunk

    def snapshot(self) -> SessionState:
        self.state.rng_state = self.generator.get_state()
        return self.state.copy()

    def restore(self, snapshot: SessionState) -> None:
        if snapshot.history.latents.shape[0] != self.batch_size:
            raise ValueError(f"snapshot has batch {snapshot.history.latents.shape[0]}, session has {self.batch_size}")
        self.state = snapshot.copy()
        self.generator.set_state(snapshot.rng_state)

    def fork(self, n: int) -> RolloutSession:
        """A new session with `n` branches per current branch, all continuing from the current state."""
        if n < 1:
            raise ValueError(f"fork needs n >= 1, got {n}")
        return RolloutSession(self.model, self.snapshot().copy(repeat=n), self.batch_size * n)

    # -- stepping ----------------------------------------------------------------------------------
    def _action_tensors(self, actions: Mapping[str, np.ndarray | torch.Tensor] | None) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in (actions or {}).items():
            t = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor) else value)
            if t.ndim == 2:
                t = t.unsqueeze(0).expand(self.batch_size, -1, -1)
            if t.ndim != 3 or t.shape[0] != self.batch_size:
                raise ValueError(
                    f"actions[{name!r}] must be [{self.frames_per_step}, D] or "
                    f"[{self.batch_size}, {self.frames_per_step}, D], got {list(t.shape)}"
                )
            out[name] = t.to(self.model.device, torch.float32)
        return out

    def _anchored(self, video: torch.Tensor, commanded: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoded chunk `[B, 3, F, H, W]` with the last true frame's detail where a fixed camera's world
        keeps it (`astra_model.anchoring`)."""
        world = fixed_camera_of(commanded, self.model.config)
        return video if world is None else self.state.anchor.apply(video, world.anchor_tolerance)

    def step(
        self,
        actions: Mapping[str, np.ndarray | torch.Tensor] | None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        use_kv_cache: bool = True,
        noise: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Generate the next chunk.

        Args:
            actions: modality -> per-video-frame actions `[frames_per_step, D]` (shared by all branches)
                or `[batch, frames_per_step, D]`; None rolls out action-free.
            guidance_scale: AFG scale (if None, the model's for the world the actions command; 0
                disables guidance).
            steps: Euler steps (model default if None).
            use_kv_cache: cache history keys/values across denoising steps (block_causal models only).
            noise: the chunk's starting noise `[batch, C, F, h, w]`; default: drawn from the session's
                generator and shared by every branch (independent episodes batched together bring their own).

        Returns:
            uint8 `[frames_per_step, H, W, 3]`, or `[batch, frames_per_step, H, W, 3]` after a fork.
        """
        return run_to_end(self.stepping(actions, guidance_scale, steps, use_kv_cache, noise=noise))

    @torch.no_grad()  # torch keeps grad off inside every piece of a decorated generator
    def stepping(
        self,
        actions: Mapping[str, np.ndarray | torch.Tensor] | None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        use_kv_cache: bool = True,
        decode: bool = True,
        noise: torch.Tensor | None = None,
    ) -> Pieces[np.ndarray | torch.Tensor]:
        """`step` in pieces (`astra_model.pieces`): one per denoising step and per decoded latent frame.
        The session changes as the pieces run: one left unfinished leaves it unusable (fork first).

        `decode=False` skips the VAE and returns the chunk's latents `[B, C, F, h, w]` (what a planner
        scores); the session's decoder then falls behind, so it can only go on without decoding."""
        if decode and self._undecoded:
            raise ValueError("this session stepped without decoding: its decoder is behind; fork before that")
        cfg = self.model.config
        commanded = self._action_tensors(actions)
        validate_actions(commanded, cfg, cfg.chunk_latent_frames)
        acts = as_model_reads(commanded, cfg, self.state.last_commands)
        scale = guidance_scale_of(commanded, cfg) if guidance_scale is None else float(guidance_scale)
        history = self.state.history
        h, w = history.latents.shape[-2:]
        shape = (1, cfg.latent_channels, cfg.chunk_latent_frames, h, w)
        if noise is None:
            noise = torch.randn(shape, generator=self.generator).expand(self.batch_size, -1, -1, -1, -1)
        elif noise.shape != (self.batch_size, *shape[1:]):
            raise ValueError(f"noise must be {[self.batch_size, *shape[1:]]}, got {list(noise.shape)}")
        noise = noise.to(self.model.device, self.model.dtype)

        guided = uses_guidance(scale, bool(acts))
        cache = KVCache() if use_kv_cache and cfg.attention == "block_causal" else None
        # AFG runs the conditional and the action-free branch as one batch [cond | free].
        hist = history.tiled(2) if guided else history
        batch_acts = {k: torch.cat([v, v]) for k, v in acts.items()} if guided else acts

        def velocity(x, t, mask):
            return self.model(x, t, batch_acts or None, hist, action_mask=mask, kv_cache=cache).velocity

        latents = yield from denoising(
            velocity, noise, steps or cfg.sampler.steps, cfg.sampler.shift, scale, bool(acts)
        )
        video = self._anchored((yield from self.state.vae.decoding(latents)), commanded) if decode else None
        self._undecoded |= not decode
        grouped = {k: group_per_latent_frame(v, cfg) for k, v in acts.items()}
        self.state.history = history.append(latents, cfg.history, grouped)
        # A chunk without a relative modality leaves its last command unknown.
        self.state.last_commands = last_commands(commanded, cfg)
        self.state.step_count += 1
        if video is None:
            return latents
        frames = video_to_frames(video).cpu().numpy()
        return frames[0] if self.batch_size == 1 else frames
