"""Load the official Astra release (DiffSynth naming) onto `AstraWorldModel`.

The release saves the full DiT state dict of its `WanModelMoe` (frozen Wan weights included) with
DiffSynth names. This module renames every key to this project's layout (diffusers names for the
backbone), infers the config from tensor shapes and builds the model. Differences to keep in mind:

- The release routes by modality (top-1, weight 1): sekai -> expert 0, nuscenes -> 1, openx -> 2. The
  loaded model uses `routing="modality"` with those experts; its `global_router` is unused and skipped.
- Its actions are one vector per latent frame (12-D flattened 3x4 relative pose for sekai/openx, 7-D
  for nuscenes), so the model uses `action_grouping="mean"`: pass each latent frame's vector for its
  4 video frames.
- `blocks.*.cam_encoder` is a fallback the release never uses while MoE is on; it is skipped.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan

from .checkpoint import CheckpointError, build_from_state, read_weights
from .config import AstraConfig, MoAEConfig
from .model import AstraWorldModel

# Release processor name -> (modality name here, expert index in the release's fixed routing).
OFFICIAL_MODALITIES = {"sekai": ("camera_pose", 0), "nuscenes": ("ego_pose", 1), "openx": ("robot_pose", 2)}

_BLOCK_RULES = [
    (r"self_attn\.([qkv])\.", r"backbone.blocks.{i}.attn1.to_\1."),
    (r"self_attn\.o\.", r"backbone.blocks.{i}.attn1.to_out.0."),
    (r"self_attn\.norm_([qk])\.", r"backbone.blocks.{i}.attn1.norm_\1."),
    (r"cross_attn\.([qkv])\.", r"backbone.blocks.{i}.attn2.to_\1."),
    (r"cross_attn\.o\.", r"backbone.blocks.{i}.attn2.to_out.0."),
    (r"cross_attn\.norm_([qk])\.", r"backbone.blocks.{i}.attn2.norm_\1."),
    (r"norm3\.", r"backbone.blocks.{i}.norm2."),
    (r"ffn\.0\.", r"backbone.blocks.{i}.ffn.net.0.proj."),
    (r"ffn\.2\.", r"backbone.blocks.{i}.ffn.net.2."),
    (r"modulation$", r"backbone.blocks.{i}.scale_shift_table"),
    (r"projector\.", r"adapters.{i}."),
    (r"moe\.experts\.(\d+)\.0\.", r"moae.experts.{i}.\1."),
]

_TOP_RULES = [
    (r"patch_embedding\.", "backbone.patch_embedding."),
    (r"text_embedding\.0\.", "backbone.condition_embedder.text_embedder.linear_1."),
    (r"text_embedding\.2\.", "backbone.condition_embedder.text_embedder.linear_2."),
    (r"time_embedding\.0\.", "backbone.condition_embedder.time_embedder.linear_1."),
    (r"time_embedding\.2\.", "backbone.condition_embedder.time_embedder.linear_2."),
    (r"time_projection\.1\.", "backbone.condition_embedder.time_proj."),
    (r"head\.head\.", "backbone.proj_out."),
    (r"head\.modulation$", "backbone.scale_shift_table"),
    (r"clean_x_embedder\.proj\.", "history_embedder.proj_1x."),
    (r"clean_x_embedder\.proj_2x\.", "history_embedder.proj_2x."),
    (r"clean_x_embedder\.proj_4x\.", "history_embedder.proj_4x."),
]

_SKIPPED = (r"^blocks\.\d+\.cam_encoder\.", r"^global_router\.")


def rename_official_key(key: str) -> str | None:
    """This project's name for a release key; None for keys the model does not use."""
    if any(re.match(p, key) for p in _SKIPPED):
        return None
    block = re.match(r"^blocks\.(\d+)\.(.*)$", key)
    rules, rest, i = (_BLOCK_RULES, block.group(2), block.group(1)) if block else (_TOP_RULES, key, "")
    for pattern, target in rules:
        if re.match(pattern, rest):
            return re.sub(pattern, target.replace("{i}", i), rest, count=1)
    proc = re.match(r"^(\w+)_processor\.projector\.0\.(weight|bias)$", key)
    if proc and proc.group(1) in OFFICIAL_MODALITIES:
        return f"moae.encoders.{OFFICIAL_MODALITIES[proc.group(1)][0]}.{proc.group(2)}"
    raise CheckpointError(f"unrecognised key {key!r} in the official Astra checkpoint")


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The release's `.ckpt`/`.pth` (torch pickle, read with weights_only) or a safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_weights(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt pickles
        raise CheckpointError(f"{path}: corrupt or not a torch checkpoint ({err})") from err
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def infer_config(state: dict[str, torch.Tensor], head_dim: int, vae_config: dict[str, Any]) -> AstraConfig:
    """The `AstraConfig` a release state dict implies (Wan backbone sizes, modalities, experts)."""
    patch = state["patch_embedding.weight"]
    dim = patch.shape[0]
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    processors = {
        name: state[f"{name}_processor.projector.0.weight"]
        for name in OFFICIAL_MODALITIES
        if f"{name}_processor.projector.0.weight" in state
    }
    if not processors:
        raise CheckpointError("no *_processor weights: this is not an Astra MoE checkpoint")
    num_experts = 1 + max(int(k.split(".")[4]) for k in state if re.match(r"^blocks\.0\.moe\.experts\.", k))
    backbone = {
        "patch_size": [1, 2, 2],
        "num_attention_heads": dim // head_dim,
        "attention_head_dim": head_dim,
        "in_channels": patch.shape[1],
        "out_channels": state["head.head.weight"].shape[0] // 4,
        "text_dim": state["text_embedding.0.weight"].shape[1],
        "freq_dim": state["time_embedding.0.weight"].shape[1],
        "ffn_dim": state["blocks.0.ffn.0.weight"].shape[0],
        "num_layers": layers,
        "cross_attn_norm": "blocks.0.norm3.weight" in state,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
    }
    modalities = {OFFICIAL_MODALITIES[n][0]: w.shape[1] - 1 for n, w in processors.items()}
    experts = {OFFICIAL_MODALITIES[n][0]: OFFICIAL_MODALITIES[n][1] for n in processors}
    unified = next(iter(processors.values())).shape[0]
    return AstraConfig.preset("wan2.1-t2v-1.3b").replace(
        backbone=backbone,
        vae=vae_config,
        modalities=modalities,
        action_grouping="mean",
        moae=MoAEConfig(
            unified_dim=unified,
            num_experts=num_experts,
            top_k=1,
            routing="modality",
            modality_experts=experts,
        ),
    )


def load_official_astra(
    ckpt_path: str | Path,
    wan_path: str | Path | None = None,
    head_dim: int = 128,
    vae_config: dict[str, Any] | None = None,
) -> AstraWorldModel:
    """Build an `AstraWorldModel` from the official Astra checkpoint.

    Args:
        ckpt_path: the release's `diffusion_pytorch_model.ckpt` (or a safetensors copy).
        wan_path: diffusers Wan 2.1 folder; its `vae/` provides the VAE. Without it the VAE is built from
            `vae_config` with random weights (only useful for tests) and a warning is issued.
        head_dim: attention head width (128 for every Wan 2.1 model); not recoverable from shapes.
    """
    raw = read_official_state(ckpt_path)
    vae = None
    if wan_path is not None:
        vae = AutoencoderKLWan.from_pretrained(Path(wan_path) / "vae")
        vae_config = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in vae.config.items() if not k.startswith("_")
        }
    elif vae_config is None:
        vae_config = {}
    if vae is None:
        warnings.warn("load_official_astra: no wan_path given, the VAE has random weights", stacklevel=2)
    config = infer_config(raw, head_dim, vae_config)
    state = {new: t for k, t in raw.items() if (new := rename_official_key(k)) is not None}
    state["default_text_embeds"] = torch.zeros(config.text_len, config.backbone["text_dim"])
    vae_state = (vae or AutoencoderKLWan(**vae_config)).state_dict()
    state.update({f"vae.{k}": v for k, v in vae_state.items()})
    return build_from_state(config, state, str(ckpt_path))
