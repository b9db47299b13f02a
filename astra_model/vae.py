"""Streaming Wan VAE: encode and decode chunk by chunk with the causal convolution caches kept.

diffusers' `AutoencoderKLWan.encode/decode` clear their caches on every call, so decoding a rollout
chunk by chunk would either re-decode the past or lose temporal context. `VAEStream` owns the caches
of one rollout instead: every latent frame is decoded exactly once, and the result equals one-shot
decoding of the whole latent video.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import AutoencoderKLWan

from .pieces import Pieces, run_to_end


def frames_per_latent(temperal_downsample: Sequence[bool]) -> int:
    """Video frames per latent frame after the first: 2 ** (number of temporal downsamples)."""
    return 2 ** sum(bool(d) for d in temperal_downsample)


def _clone_cache(cache: list | None, repeat: int = 1) -> list | None:
    return _map_cache(cache, lambda c: c.repeat_interleave(repeat, dim=0))


def _map_cache(cache: list | None, fn: Callable[[torch.Tensor], torch.Tensor]) -> list | None:
    """`fn` applied to every tensor of a causal-conv cache (other entries, markers or None, kept)."""
    if cache is None:
        return None
    return [fn(c) if isinstance(c, torch.Tensor) else c for c in cache]


def _layout(cache: list | None) -> list | None:
    """A cache's entries, tensors by their shape past the batch: what must agree for two to stack."""
    if cache is None:
        return None
    return [tuple(c.shape[1:]) if isinstance(c, torch.Tensor) else c for c in cache]


class VAEStream:
    """Causal encode/decode state of one rollout on a frozen Wan VAE.

    Latents are normalised with the VAE's `latents_mean` / `latents_std`, as Wan pipelines do.
    """

    def __init__(self, vae: AutoencoderKLWan) -> None:
        self.vae = vae
        self.enc_cache: list | None = None
        self.dec_cache: list | None = None
        self.ratio = frames_per_latent(vae.config.temperal_downsample)
        z = vae.config.z_dim
        self._mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
        self._std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)

    def _new_cache(self, part: str) -> list:
        return [None] * self.vae._cached_conv_counts[part]

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """`[B, 3, T, H, W]` in [-1, 1] -> normalised latents `[B, z, T', H/s, W/s]`.

        With `r = self.ratio` video frames per latent frame, the first call of a stream takes `1 + rk`
        frames (the first frame is encoded alone); later calls continue the video and take `rk` frames.
        """
        r = self.ratio
        first = self.enc_cache is None
        t = video.shape[2]
        if (first and (t - 1) % r) or (not first and t % r):
            need = f"1 + {r}k frames on the first call" if first else f"{r}k frames after the first call"
            raise ValueError(f"VAEStream.encode: got {t} frames, needs {need}")
        if first:
            self.enc_cache = self._new_cache("encoder")
        pieces = [video[:, :, :1]] if first else []
        start = 1 if first else 0
        # diffusers' one-shot encode feeds the encoder 4 frames at a time; cutting where it cuts keeps a
        # stream bit-exact with it.
        step = max(r, 4)
        pieces += [video[:, :, i : i + step] for i in range(start, t, step)]
        outs = [self.vae.encoder(p.to(self.vae.dtype), feat_cache=self.enc_cache, feat_idx=[0]) for p in pieces]
        moments = self.vae.quant_conv(torch.cat(outs, dim=2))
        mu = moments[:, : self.vae.config.z_dim]
        return (mu - self._mean.to(mu)) / self._std.to(mu)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents `[B, z, F, h, w]` -> video `[B, 3, T, H, W]` in [-1, 1].

        The stream's first latent frame decodes to 1 video frame, every later one to `self.ratio`.
        """
        return run_to_end(self.decoding(latents))

    @torch.no_grad()  # torch keeps grad off inside every piece of a decorated generator
    def decoding(self, latents: torch.Tensor) -> Pieces[torch.Tensor]:
        """`decode` in pieces (`astra_model.pieces`), one latent frame each."""
        z = latents.to(self.vae.dtype) * self._std.to(latents.device, self.vae.dtype) + self._mean.to(
            latents.device, self.vae.dtype
        )
        x = self.vae.post_quant_conv(z)
        outs = []
        for i in range(x.shape[2]):
            first = self.dec_cache is None
            if first:
                self.dec_cache = self._new_cache("decoder")
            outs.append(
                self.vae.decoder(x[:, :, i : i + 1], feat_cache=self.dec_cache, feat_idx=[0], first_chunk=first)
            )
            yield
        return torch.cat(outs, dim=2).clamp(-1.0, 1.0)

    def branch(self, index: int) -> VAEStream:
        """Branch `index` of this stream's batch alone (copies)."""
        other = VAEStream(self.vae)
        other.enc_cache = _map_cache(self.enc_cache, lambda c: c[index : index + 1].clone())
        other.dec_cache = _map_cache(self.dec_cache, lambda c: c[index : index + 1].clone())
        return other

    def lines_up_with(self, other: VAEStream) -> bool:
        """Whether the two streams' caches have one layout (they can be stacked)."""
        return all(
            _layout(mine) == _layout(theirs)
            for mine, theirs in ((self.enc_cache, other.enc_cache), (self.dec_cache, other.dec_cache))
        )

    @staticmethod
    def stack(streams: list[VAEStream]) -> VAEStream:
        """One batched stream of streams that line up, batch entry i being streams[i]."""
        other = VAEStream(streams[0].vae)
        for part in ("enc_cache", "dec_cache"):
            caches = [getattr(s, part) for s in streams]
            if caches[0] is not None:
                merged = [
                    torch.cat(entries) if isinstance(entries[0], torch.Tensor) else entries[0]
                    for entries in zip(*caches, strict=True)
                ]
                setattr(other, part, merged)
        return other

    def copy(self, repeat: int = 1) -> VAEStream:
        """An independent copy of this stream's state, each batch element repeated `repeat` times."""
        other = VAEStream(self.vae)
        other.enc_cache = _clone_cache(self.enc_cache, repeat)
        other.dec_cache = _clone_cache(self.dec_cache, repeat)
        return other


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `[B, T, H, W, 3]` -> float `[B, 3, T, H, W]` in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float `[B, 3, T, H, W]` in [-1, 1] -> uint8 `[B, T, H, W, 3]`."""
    return ((video.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
