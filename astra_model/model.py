"""`AstraWorldModel`: Astra's action-conditioned denoiser on a frozen diffusers Wan-2.1 backbone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.utils.checkpoint
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn

from .action_field import ActionField
from .actions import group_per_latent_frame, validate_actions
from .blocks import LayerKV, Stream, astra_block
from .config import AstraConfig
from .extensions import ChunkInputs, WorldExtensions, condition
from .history import History, HistoryEmbedder
from .init import identity_
from .moae import MixtureOfActionExperts, RoutedActions
from .pose_warp import PoseWarp
from .rope import grid_positions, rotary_embedding
from .worlds import TrainedWeights, separate_world_of, world_of, worlds_on

if TYPE_CHECKING:
    from .rollout import RolloutSession

# Parameter name patterns of the backbone that Astra trains; the rest of the backbone stays frozen.
TRAINABLE_BACKBONE = ("attn1.",)


@dataclass
class AstraOutput:
    """Result of `AstraWorldModel.forward`.

    Attributes:
        velocity: `[B, C, F, h, w]` predicted flow-matching velocity (noise - x0).
        load_balance_loss: scalar MoAE router loss (0 without learned routing or actions).
        field_render: `[B, F * h/2 * w/2, 4 C]` the action field's renderer's prediction of each chunk
            token's clean latent (`extensions.action_field.render`; a token's 2 x 2 latent pixels as
            `pixel_unshuffle` orders them); None without a renderer or actions.
    """

    velocity: torch.Tensor
    load_balance_loss: torch.Tensor
    field_render: torch.Tensor | None = None


class KVCache:
    """History keys/values per block, valid while the history, actions and text stay the same
    (one chunk's denoising loop). Only for `block_causal` attention."""

    def __init__(self) -> None:
        self.layers: list[LayerKV] | None = None


class AstraWorldModel(nn.Module):
    """Astra world model.

    Submodules:
        backbone: diffusers `WanTransformer3DModel`; only its self-attention (`attn1`) is trainable.
        vae: diffusers `AutoencoderKLWan`, frozen.
        adapters: one ACT-Adapter `Linear(dim, dim)` per block after self-attention, identity at start.
        history_embedder: patch embedders for the 1x / 2x / 4x history slots.
        moae: Mixture of Action Experts.
        extensions: the trained modules of our extensions that act on MoAE's features
            (`astra_model.extensions`).
        worlds: per world with its own weights (`WorldConfig.own_weights`), its copy of the trained
            weights above (`astra_model.worlds`).
        pose_warp: per modality of `config.extensions.pose_warp`, the embedding of its warped latest
            history frame (`astra_model.pose_warp`), zero at start.
    """

    def __init__(
        self,
        config: AstraConfig,
        backbone: WanTransformer3DModel | None = None,
        vae: AutoencoderKLWan | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else WanTransformer3DModel(**config.backbone)
        self.vae = vae if vae is not None else AutoencoderKLWan(**config.vae)
        dim, blocks = config.dim, len(self.backbone.blocks)
        self.adapters = nn.ModuleList(nn.Linear(dim, dim) for _ in range(blocks))
        self.history_embedder = HistoryEmbedder(config.latent_channels, dim)
        self.moae = MixtureOfActionExperts(config, blocks)
        self.extensions = WorldExtensions(config, blocks, worlds_on(None, config))
        # Text context used when the caller gives none (a world model is usually driven without prompts).
        self.register_buffer("default_text_embeds", torch.zeros(config.text_len, config.backbone["text_dim"]))
        # Optional uint8 [H, W, 3] frame a rollout starts from when the user gives none (saved with the model).
        self.seed_frame: np.ndarray | None = None
        # Recompute block activations in backward instead of storing them (set by the trainer on GPUs).
        self.gradient_checkpointing = False
        for adapter in self.adapters:
            identity_(adapter)
        self.history_embedder.init_from_patch_embedding(self.backbone.patch_embedding)
        own = [name for name, world in config.all_worlds.items() if world.own_weights]
        self.worlds = nn.ModuleDict(
            {name: self.shared_weights().copy(WorldExtensions(config, blocks, [name])) for name in own}
        )
        self.pose_warp = nn.ModuleDict(
            {name: PoseWarp(config.latent_channels, dim, fov) for name, fov in config.extensions.pose_warp.items()}
        )
        self.set_trainable()

    # -- construction ------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_worlds(self) -> None:
        """Every separate world's weights set to the shared ones (an extension module the shared weights lack
        keeps its own, which changes nothing until trained): the model then computes the same in every world."""
        shared = self.shared_weights().state_dict()
        for weights in self.worlds.values():
            own = weights.state_dict()
            weights.load_state_dict({k: v for k, v in shared.items() if k in own}, strict=False)

    def set_trainable(self) -> None:
        """Astra's split: self-attention, ACT-Adapters, history embedders and MoAE train (the shared ones
        and every separate world's), and so do the extensions' modules; cross-attention, FFN, modulation,
        patch embedding, head and VAE stay frozen."""
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(any(p in name for p in TRAINABLE_BACKBONE))
        self.vae.requires_grad_(False)
        for module in (self.adapters, self.history_embedder, self.moae, self.extensions, self.worlds, self.pose_warp):
            module.requires_grad_(True)

    def shared_weights(self) -> TrainedWeights:
        """The shared trained weights, gathered as a separate world holds its own (the modules themselves,
        not copies)."""
        attn1 = nn.ModuleList(block.attn1 for block in self.backbone.blocks)
        return TrainedWeights(attn1, self.adapters, self.history_embedder, self.moae, self.extensions)

    def shared_names(self) -> dict[str, str]:
        """Each separate world's parameter name -> the name of the shared parameter it copies."""
        name_of = {id(p): n for n, p in self.named_parameters()}
        shared = dict(self.shared_weights().named_parameters())
        return {
            f"worlds.{world}.{n}": name_of[id(shared[n])]
            for world, weights in self.worlds.items()
            for n, _ in weights.named_parameters()
            if n in shared
        }

    @classmethod
    def from_wan(cls, path: str | Path, **overrides: Any) -> AstraWorldModel:
        """Wrap a diffusers-format Wan 2.1 folder (`transformer/` and `vae/` subfolders).

        `overrides` replace `AstraConfig` fields of the `wan2.1-t2v-1.3b` preset (e.g. `modalities`).
        """
        root = Path(path)
        for sub in ("transformer", "vae"):
            if not (root / sub / "config.json").is_file():
                raise FileNotFoundError(f"{root / sub / 'config.json'} not found: expected a diffusers Wan folder")
        backbone = WanTransformer3DModel.from_pretrained(root / "transformer")
        vae = AutoencoderKLWan.from_pretrained(root / "vae")
        config = AstraConfig.preset("wan2.1-t2v-1.3b").replace(
            backbone=_plain_config(backbone.config), vae=_plain_config(vae.config), **overrides
        )
        return cls(config, backbone=backbone, vae=vae)

    def save_pretrained(self, directory: str | Path) -> None:
        from .checkpoint import save_model

        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> AstraWorldModel:
        from .checkpoint import load_model

        return load_model(directory, device=device)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        return self.default_text_embeds.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.patch_embedding.weight.dtype

    # -- denoiser ----------------------------------------------------------------------------------
    def predict_velocity(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        actions: Mapping[str, torch.Tensor] | None = None,
        history: History | torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow-matching velocity `[B, C, F, h, w]` for `noisy_latents` `[B, C, F, h, w]` at `timestep` `[B]`
        (0..1000, sigma * 1000). `actions` maps modality -> `[B, F * temporal_ratio, D]` per video frame.
        `history` is a `History` or `[B, C, T, h, w]` clean latents of frames 0..T-1."""
        return self(noisy_latents, timestep, actions, history, text_embeds).velocity

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        actions: Mapping[str, torch.Tensor] | None = None,
        history: History | torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> AstraOutput:
        """Denoiser forward pass; see `predict_velocity`.

        Args:
            action_mask: `[B]` bool, False drops that sample's actions (action-free branch of AFG and
                action dropout in training).
            kv_cache: reuse history keys/values across calls with the same history (block_causal only).
        """
        b, _, f, h, w = noisy_latents.shape
        self._check_inputs(noisy_latents, kv_cache)
        if isinstance(history, torch.Tensor):
            history = History.from_latents(history)
        use_cache = kv_cache is not None and kv_cache.layers is not None

        # Conditions: timestep modulation per stream, text context.
        text = self._text_context(text_embeds, b)
        temb, t_mod, context = self._conditions(timestep, text)

        # The trained weights of the world the actions command, and MoAE's routed actions.
        weights = self.weights_for(actions)
        routed, lb_loss = self._route_actions(weights.moae, actions, f, b, action_mask, noisy_latents, history)

        # Streams: the chunk's tokens, and the packed history's unless its keys and values are cached.
        first_index = history.next_index if history is not None else 0
        chunk_pos = grid_positions(torch.arange(first_index, first_index + f), h // 2, w // 2)
        chunk_x = self.backbone.patch_embedding(noisy_latents).flatten(2).transpose(1, 2)
        hist_x = hist_pos = None
        if history is not None and not use_cache:
            hist_x, hist_pos = weights.history_embedder(history, self.config.history)
        # What our extensions do to this pass (`astra_model.extensions`): to the chunk's tokens and rotary
        # positions here, to the action embeddings in each block.
        world = world_of(actions, self.config)
        inputs = ChunkInputs(world, actions, routed, action_mask, history, chunk_pos, hist_pos, h // 2, w // 2)
        ext = condition(self.config, weights.extensions, self.pose_warp, inputs)
        head_dim = self.config.backbone["attention_head_dim"]
        chunk_rope = ext.chunk_rope(_to(rotary_embedding(chunk_pos, head_dim), chunk_x), head_dim)
        chunk_stream = Stream(ext.chunk_tokens(chunk_x), t_mod, None, chunk_rope)
        hist_stream = None if hist_x is None else self._history_stream(hist_x, hist_pos, timestep, text, t_mod, chunk_x)

        # Blocks: each frozen Wan block with the world's self-attention and ACT-Adapter, and MoAE's
        # embedding of each latent frame's actions added to that frame's tokens.
        new_cache = []
        blocks = zip(self.backbone.blocks, weights.attn1, weights.adapters, strict=True)
        for i, (block, attn, adapter) in enumerate(blocks):
            if routed is not None:
                per_frame = weights.moae.block_embedding(i, routed.chunk)
                chunk_stream.action = ext.chunk_action(i, per_frame.repeat_interleave(chunk_x.shape[1] // f, dim=1))
                if hist_stream is not None:
                    hist_stream.action = ext.history_action(self._history_embedding(weights.moae, i, routed))
            cached = kv_cache.layers[i] if use_cache else None
            chunk_stream.x, hist_x, kv = self._block(block, attn, adapter, chunk_stream, hist_stream, context, cached)
            if hist_stream is not None:
                hist_stream.x = hist_x
            new_cache.append(kv)
        if kv_cache is not None and not use_cache and history is not None:
            kv_cache.layers = new_cache

        # Head, on chunk tokens only.
        return AstraOutput(self._head(chunk_stream.x, temb, noisy_latents.shape), lb_loss, ext.render)

    def weights_for(self, actions: Mapping[str, torch.Tensor] | Iterable[str] | None) -> TrainedWeights:
        """The trained weights a call with `actions` (or their modalities) runs on: the shared ones, or those
        of the separate world the actions command (`astra_model.worlds`)."""
        world = separate_world_of(actions, self.config)
        return self.worlds[world] if world is not None else self.shared_weights()

    def action_field_of(self, actions: Mapping[str, torch.Tensor] | Iterable[str]) -> ActionField | None:
        """The action field of the world `actions` (or their modalities) command, if it has one."""
        field, world = self.weights_for(actions).extensions.action_field, world_of(actions, self.config)
        return field if field is not None and world in self.config.extensions.action_field.worlds else None

    def field_drawing(self, actions: Mapping[str, torch.Tensor], latent_shape: torch.Size) -> torch.Tensor | None:
        """The action field's renderer's drawing `[B, F * h/2 * w/2, 4 C]` (as `AstraOutput.field_render`) of a
        chunk of latents shaped `latent_shape` `[B, C, F, h, w]` under `actions` (as the model reads them),
        without running the transformer; None when the commanded world's field has no renderer."""
        b, _, f, h, w = latent_shape
        weights, field = self.weights_for(actions), self.action_field_of(actions)
        if field is None or field.renderer is None:
            return None
        routed, _ = self._route_actions(weights.moae, actions, f, b, None, field.renderer[0].weight, None)
        # The field reads a token's place in the image, not its frame index.
        return field.drawing(routed.chunk, grid_positions(torch.arange(f), h // 2, w // 2), h // 2, w // 2)

    # -- forward helpers ---------------------------------------------------------------------------
    def _check_inputs(self, noisy_latents: torch.Tensor, kv_cache: KVCache | None) -> None:
        h, w = noisy_latents.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"latent height and width must be even (Wan patch 1x2x2), got {h}x{w}")
        if kv_cache is not None and self.config.attention != "block_causal":
            raise ValueError("a KV cache needs attention='block_causal'; 'full' attention re-reads the history")

    def _text_context(self, text_embeds: torch.Tensor | None, batch: int) -> torch.Tensor:
        if text_embeds is None:
            return self.default_text_embeds.unsqueeze(0).expand(batch, -1, -1)
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != self.config.backbone["text_dim"]:
            raise ValueError(
                f"text_embeds must be [B, L, {self.config.backbone['text_dim']}], got {list(text_embeds.shape)}"
            )
        return text_embeds

    def _conditions(self, timestep: torch.Tensor, text: torch.Tensor):
        temb, proj, context, _ = self.backbone.condition_embedder(timestep, text.to(self.dtype), None)
        return temb, proj.unflatten(1, (6, -1)), context

    def _route_actions(
        self,
        moae: MixtureOfActionExperts,
        actions,
        frames: int,
        batch: int,
        action_mask,
        like: torch.Tensor,
        history: History | None,
    ) -> tuple[RoutedActions | None, torch.Tensor]:
        zero = like.new_zeros(())
        if not actions:
            return None, zero
        validate_actions(actions, self.config, frames, read=True)
        grouped = {k: group_per_latent_frame(v.to(like.dtype), self.config) for k, v in actions.items()}
        keep = None if action_mask is None else action_mask.to(like.dtype).view(batch, 1, 1)
        chunk_routed, lb_loss = moae.route(moae.encode(grouped, history_flag=0.0))
        hist_in, hist_tokens = self._history_commands(grouped, history)
        hist_routed, _ = moae.route(moae.encode(hist_in, history_flag=1.0))
        if keep is not None:
            # Dropped samples get no action embedding at all: the action-free model is the plain backbone path.
            for item in (*chunk_routed, *hist_routed):
                item.gates = item.gates * keep
        return RoutedActions(chunk_routed, hist_routed, hist_tokens), lb_loss

    def _history_stream(
        self,
        hist_x: torch.Tensor,
        hist_pos: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        t_mod: torch.Tensor,
        like: torch.Tensor,
    ) -> Stream:
        """The history's stream, in the dtype of the chunk's tokens `like`: clean (timestep 0) under
        block-causal attention, else modulated as the chunk is (`t_mod`)."""
        h_mod = self._conditions(torch.zeros_like(timestep), text)[1] if self._block_causal else t_mod
        head_dim = self.config.backbone["attention_head_dim"]
        return Stream(hist_x.to(like.dtype), h_mod, None, _to(rotary_embedding(hist_pos, head_dim), like))

    def _block(self, block, attn, adapter, chunk: Stream, history: Stream | None, context, cached: LayerKV | None):
        """One block (`astra_model.blocks.astra_block`), recomputed in backward under gradient checkpointing."""
        args = (block, attn, adapter, chunk, history, context, self._block_causal, cached)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(astra_block, *args, use_reentrant=False)
        return astra_block(*args)

    @property
    def _block_causal(self) -> bool:
        return self.config.attention == "block_causal"

    def _history_commands(
        self, grouped: dict[str, torch.Tensor], history: History | None
    ) -> tuple[dict[str, torch.Tensor], list[int] | None]:
        """MoAE input of the history tokens and the tokens of each history group: per group with
        `history.with_actions` (a typical command where the history does not know them, `MoAE.typical`),
        else one all-zero command (the flag alone) for every history token."""
        if history is None or not self.config.history.with_actions:
            return {k: torch.zeros_like(v[:, :1]) for k, v in grouped.items()}, None
        pooled, scales = history.group_actions(self.config.history)
        b, g = history.latents.shape[0], len(scales)

        def unknown(name: str, like: torch.Tensor) -> torch.Tensor:
            return self.moae.typical(name, like.shape[-1]).to(like).expand(b, g, -1)

        inputs = {k: pooled[k].to(v) if k in pooled else unknown(k, v) for k, v in grouped.items()}
        h, w = history.latents.shape[-2:]
        return inputs, [self.history_embedder.group_tokens(s, h, w) for s in scales]

    def _history_embedding(self, moae: MixtureOfActionExperts, block: int, routed: RoutedActions) -> torch.Tensor:
        per_group = moae.block_embedding(block, routed.history)  # [B, G or 1, dim]
        if routed.history_tokens is None:
            return per_group
        tokens = torch.tensor(routed.history_tokens, device=per_group.device)
        return per_group.repeat_interleave(tokens, dim=1)

    def _head(self, x: torch.Tensor, temb: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        bb = self.backbone
        b, _, f, h, w = shape
        shift, scale = (bb.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (bb.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = bb.proj_out(x)
        pt, ph, pw = bb.config.patch_size
        x = x.reshape(b, f // pt, h // ph, w // pw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    # -- rollout -----------------------------------------------------------------------------------
    def start(
        self, first_frames: np.ndarray, seed: int = 0, commands: Mapping[str, np.ndarray] | None = None
    ) -> RolloutSession:
        """Begin an autoregressive rollout from real frames (uint8 `[T, H, W, 3]` or `[H, W, 3]`).

        `commands` optionally maps modality -> `[T, D]`, the command that produced each first frame (row 0
        is not used), as training clips give them. The history then carries them (`history.with_actions`);
        without them the first frames' commands are unknown."""
        from .rollout import RolloutSession

        return RolloutSession.start(self, first_frames, seed=seed, commands=commands)


def _to(rope: tuple[torch.Tensor, torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rope[0].to(like.device), rope[1].to(like.device)


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers FrozenDict config as JSON-friendly kwargs (private `_` keys dropped)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}
