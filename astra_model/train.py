"""Train Astra in the paper's stages: `train(config, train_episodes, val_episodes)`.

A stage's `TrainConfig` is one YAML file (see `config/`); the episodes are `VideoEpisode`s from
anywhere (`astra-train`, in `astra_ros.train`, reads them from the rosbag2 recordings the config's `data` names).
Stages:

1. `vae`: train a Wan VAE (`AutoencoderKLWan` config) on the frames; afterwards its latent statistics
   are measured and stored in its config, so latents are normalised for diffusion.
   `decoder` (ours, like Stable Diffusion's fine-tuned decoders): fine-tune only the VAE decoder of a
   trained world model on long streams. Its latents, and so everything trained on them, stay valid.
2. `backbone`: pretrain the Wan transformer action-free as a video continuation model (with the
   history embedders), on the stage-1 VAE's latents, one micro-batch per domain per optimiser step.
3. `astra`: freeze the backbone and train ACT-Adapters, self-attention, history embedders and MoAE with
   flow matching, noise-augmented history and action dropout, all domains mixed (one micro-batch per
   modality per optimiser step). `ablation:` trains the paper's ablations with the same budget.
   `renderer` (ours): fit only the action fields' renderers (`extensions.action_field.render`) of a stage-3 model to
   draw the chunks of the data from their commands, without the transformer, before stage 3 goes on.

Every stage resumes from its latest checkpoint (`resume=True`), shows tqdm progress, logs TensorBoard
scalars, writes safetensors checkpoints, evaluates periodically on held-out episodes, uses bf16 autocast
and gradient checkpointing when a GPU is present, and runs data-parallel under `torchrun` (DDP).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .action_field import widened
from .checkpoint import WEIGHTS_NAME, read_model_weights, read_weights
from .config import AstraConfig
from .data import LatentClips, VideoEpisode, action_stats, random_frame_clips
from .formats import FORMAT
from .model import AstraWorldModel
from .relative_commands import encoder_with_targets
from .training import flow_matching_loss, render_error

ABLATIONS = ("no_noise_aug", "no_afg", "shared_expert")
STAGES = ("vae", "decoder", "backbone", "astra", "renderer")
# What the `renderer` stage fits.
RENDERER_PARTS = ("action_field.renderer.",)
# Stage settings that are gone (no recipe used them), each with the value that left it off: a YAML may still
# name one at that value.
REMOVED_SETTINGS = {
    "family_weight": 0.0,
    "motion_weight": 0.0,
    "warp_weight": 0.0,
    "world_weight": 1.0,
    "timestep_shift": None,
}


@dataclass
class DataConfig:
    """Where a stage's episodes come from (rosbag2 globs and topics, read by the caller of `train`) and the
    folder that caches their latents."""

    train: list[str]
    val: list[str]
    image_topic: str = "/camera/image_raw"
    action_topics: dict[str, str] = field(default_factory=dict)
    joint_names: list[str] | None = None
    cache_dir: str | None = None


@dataclass
class TrainConfig:
    """One stage's training run (the YAML file's fields)."""

    stage: str
    out_dir: str
    data: DataConfig
    model: dict[str, Any] = field(default_factory=dict)  # AstraConfig: preset name + overrides
    init_from: str | None = None  # previous stage's output folder
    # A trained run's checkpoint (`checkpoints/step_N`) or `final` folder to start the trainable weights
    # from where names and shapes match, e.g. stage 3 continued under a changed recipe; new heads start fresh.
    warm_start: str | None = None
    steps: int = 1000
    # End the run after this step (checkpoint and final saved) while `steps` still sets the schedule.
    stop_at: int | None = None
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 200
    save_every: int = 200
    seed: int = 0
    ablation: str | None = None
    vae_clip_frames: int = 5
    # Stage 3, each one number for every modality or a mapping modality -> value (0 for those it leaves
    # out): the share of batches that start where a family of counterfactual branches parts (see data.py),
    parting_prob: float | dict[str, float] = 0.0
    # the weight of the render term on the action field (a model with `extensions.action_field.render`),
    field_render_weight: float | dict[str, float] = 0.0
    # and the weight of the pair term on family batches (see training.py; 0 is the paper's plain loss).
    pair_weight: float | dict[str, float] = 0.0
    # Learning-rate multipliers by parameter name: each trainable parameter takes the value of the first key its
    # name contains (1 where none does), e.g. `{pose_warp.: 10}` to fit a new input's embedding faster than
    # the world that reads it, or `{worlds.camera_pose.: 0}` to hold a world still while it does.
    lr_scale: dict[str, float] = field(default_factory=dict)

    @property
    def end_step(self) -> int:
        """The step the run ends after: `stop_at` when given, else `steps`."""
        return min(self.steps, self.stop_at or self.steps)

    def for_modality(self, name: str, modality: str) -> float:
        """Setting `name` (`parting_prob`, `field_render_weight` or `pair_weight`) in `modality`'s batches; a
        mapping gives the modalities it leaves out the setting's default."""
        weight = getattr(self, name)
        if isinstance(weight, dict):
            return float(weight.get(modality, self.__dataclass_fields__[name].default))
        return float(weight)

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a stage YAML; `overrides` replace its top-level fields."""
        return cls.from_fields({**read_stage_yaml(Path(path)), **(overrides or {})}, str(path))

    @classmethod
    def from_fields(cls, fields: dict[str, Any], source: str) -> TrainConfig:
        """A stage's config from its YAML fields, checked; `source` names them in errors."""
        fields = _without_removed_settings(fields, source)
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{source}: unknown fields {unknown}")
        cfg = cls(**{**fields, "data": DataConfig(**fields["data"])})
        if cfg.stage not in STAGES:
            raise ValueError(f"{source}: stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
        if cfg.ablation is not None and cfg.ablation not in ABLATIONS:
            raise ValueError(f"{source}: ablation must be one of {ABLATIONS}, got {cfg.ablation!r}")
        if any(v < 0 for v in cfg.lr_scale.values()):
            raise ValueError(f"{source}: lr_scale multipliers must be >= 0, got {cfg.lr_scale!r}")
        return cfg


def _without_removed_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` without the removed settings it names at their off value; one set to anything else is an error."""
    for name, off in REMOVED_SETTINGS.items():
        value = data.get(name, off)
        # A per-modality mapping is off when every modality it names is.
        if any(v != off for v in (value.values() if isinstance(value, dict) else [value])):
            raise ValueError(f"{source}: {name} was removed from training; leave it out (or at {off!r}), got {value!r}")
    return {k: v for k, v in data.items() if k not in REMOVED_SETTINGS}


def read_stage_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A stage YAML's fields. `base: other.yaml` (relative to the file) supplies every field the file
    leaves out, mappings merged key by key, so a stage that changes one model switch names only it."""
    if path.resolve() in seen:
        raise ValueError(f"{path}: 'base' chain loops back: {' -> '.join(map(str, seen))} -> {path}")
    data = yaml.safe_load(path.read_text())
    base = data.pop("base", None)
    if base is None:
        return data
    return merged_fields(read_stage_yaml(path.parent / base, (*seen, path.resolve())), data)


def merged_fields(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over`'s fields on top of `base`'s, mappings merged key by key (other values replaced)."""
    both = {
        k: merged_fields(base[k], v) for k, v in over.items() if isinstance(v, dict) and isinstance(base.get(k), dict)
    }
    return {**base, **over, **both}


# -- distributed -------------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


# -- stages ------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """What the shared loop needs from a stage."""

    module: torch.nn.Module  # holds every trained parameter
    net: torch.nn.Module  # what the loss calls: `module`, or its DDP wrapper
    loss: Callable[[np.random.Generator, torch.Generator], dict[str, torch.Tensor]]
    evaluate: Callable[[], dict[str, float]]
    save_final: Callable[[Path], None]


def _model_config(cfg: TrainConfig) -> AstraConfig:
    overrides = dict(cfg.model)
    base = AstraConfig.preset(overrides.pop("preset", "tiny"))
    return base.replace(**overrides)


def _apply_ablation(config: AstraConfig, ablation: str | None) -> AstraConfig:
    if ablation == "no_afg":
        worlds = {name: {"guidance_scale": None} for name in config.worlds}
        return config.replace(action_dropout=0.0, sampler={"guidance_scale": 0.0}, worlds=worlds)
    if ablation == "shared_expert":
        # One expert per block shared by every modality; the input projections stay per modality
        # because their widths differ.
        return config.replace(moae={"num_experts": 1, "top_k": 1, "routing": "modality", "modality_experts": None})
    return config


def vae_stage(cfg: TrainConfig, train_eps: list[VideoEpisode], val_eps: list[VideoEpisode], device, wrap) -> Stage:
    # `init_from` fine-tunes a trained VAE, e.g. on longer clips so its causal caches learn to carry on
    # past the clip length the first run used.
    vae = _load_vae(cfg.init_from) if cfg.init_from else AutoencoderKLWan(**_model_config(cfg).vae)
    vae = vae.to(device).train()
    net = wrap(vae)

    def loss(rng: np.random.Generator, gen: torch.Generator) -> dict[str, torch.Tensor]:
        # Deterministic autoencoding (posterior mode): the diffusion model only ever sees posterior means,
        # and the measured latent statistics normalise their scale.
        clip = random_frame_clips(train_eps, cfg.batch_size, cfg.vae_clip_frames, rng).to(device)
        rec = _reconstruction_loss(net(clip).sample, clip)
        return {"total": rec, "recon": rec}

    def save_final(path: Path) -> None:
        set_latent_statistics(vae, train_eps, frames=cfg.vae_clip_frames)
        vae.save_pretrained(path)

    return Stage(vae, net, loss, lambda: reconstruction_psnr(vae, val_eps, cfg.vae_clip_frames), save_final)


def decoder_stage(cfg: TrainConfig, train_eps: list[VideoEpisode], val_eps: list[VideoEpisode], device, wrap) -> Stage:
    # The encoder, and with it the latent statistics, stay frozen: the world model's transformer keeps
    # predicting the latents it was trained on, and only how they are drawn improves.
    model = AstraWorldModel.from_pretrained(cfg.init_from).to(device)
    model.requires_grad_(False)
    vae = model.vae
    for part in (vae.post_quant_conv, vae.decoder):
        part.requires_grad_(True)
    vae.train()
    decoder = wrap(_Decoder(vae))

    def loss(rng: np.random.Generator, gen: torch.Generator) -> dict[str, torch.Tensor]:
        clip = random_frame_clips(train_eps, cfg.batch_size, cfg.vae_clip_frames, rng).to(device)
        with torch.no_grad():
            latents = vae.encode(clip).latent_dist.mode()
        rec = _reconstruction_loss(decoder(latents), clip)
        return {"total": rec, "recon": rec}

    return Stage(
        model,
        decoder,
        loss,
        lambda: reconstruction_psnr(vae, val_eps, cfg.vae_clip_frames),
        lambda path: model.save_pretrained(path),
    )


class _Decoder(torch.nn.Module):
    # DDP wraps a module whose forward is the trained computation.
    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def _reconstruction_loss(recon: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.l1_loss(recon, clip) + torch.nn.functional.mse_loss(recon, clip)


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, episodes: list[VideoEpisode], frames: int) -> dict[str, float]:
    """PSNR (dB) of the VAE's reconstruction of 8 fixed random `frames`-frame clips of `episodes`."""
    clip = random_frame_clips(episodes, 8, frames, np.random.default_rng(1234)).to(vae.device)
    recon = vae.decode(vae.encode(clip).latent_dist.mode()).sample
    mse = torch.nn.functional.mse_loss((recon + 1) / 2, (clip + 1) / 2).item()
    return {"psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}


@torch.no_grad()
def set_latent_statistics(
    vae: AutoencoderKLWan, episodes: list[VideoEpisode], clips: int = 32, frames: int = 5
) -> None:
    """Store the per-channel mean/std of the posterior means, so normalised latents are ~N(0, 1)."""
    vae.eval()
    rng = np.random.default_rng(0)
    device = next(vae.parameters()).device
    mus = [
        vae.encode(random_frame_clips(episodes, 4, frames, rng).to(device)).latent_dist.mode()
        for _ in range(clips // 4)
    ]
    mu = torch.cat(mus, dim=0).transpose(0, 1).flatten(1)
    vae.register_to_config(latents_mean=mu.mean(1).tolist(), latents_std=mu.std(1).clamp_min(1e-3).tolist())


def _load_vae(path: str | Path) -> AutoencoderKLWan:
    folder = Path(path)
    return AutoencoderKLWan.from_pretrained(folder / "vae" if (folder / "vae").is_dir() else folder)


def _stage_three_model(cfg: TrainConfig, train_eps) -> AstraWorldModel:
    """The model stage 3 trains: `cfg.init_from`'s frozen backbone and VAE under `cfg.model`, Astra's weights
    trainable (as initialised: `warm_start` brings a run's trained ones)."""
    base = AstraWorldModel.from_pretrained(cfg.init_from)
    # The statistics are those of this stage's data, as the model will read it (`cfg.model` may change how);
    # a modality this stage has no data for (one world trained alone) keeps the base's.
    config = _apply_ablation(base.config.replace(**{"action_stats": {}, **cfg.model}), cfg.ablation)
    stats = action_stats(train_eps, config)
    kept = {m: s for m, s in base.config.action_stats.items() if m in config.modalities and m not in stats}
    config = config.replace(action_stats={**kept, **stats})
    model = AstraWorldModel(config, backbone=base.backbone, vae=base.vae)
    model.history_embedder.load_state_dict(base.history_embedder.state_dict())
    model.reset_worlds()
    model.set_trainable()
    model.seed_frame = base.seed_frame
    return model


class _Drawing(torch.nn.Module):
    """`AstraWorldModel.field_drawing` as a module's forward, so that DDP can wrap it."""

    def __init__(self, model: AstraWorldModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, actions: dict[str, torch.Tensor], latent_shape: torch.Size) -> torch.Tensor | None:
        return self.model.field_drawing(actions, latent_shape)


def renderer_stage(cfg: TrainConfig, train_eps, val_eps, device, wrap) -> Stage:
    """Fit the action fields' renderers to the data's chunks; every other weight is `cfg.init_from`'s."""
    model = _stage_three_model(cfg, train_eps)
    warm_start(model, Path(cfg.init_from))
    for name, param in model.named_parameters():
        param.requires_grad_(any(part in name for part in RENDERER_PARTS))
    model.to(device).train()
    net = wrap(_Drawing(model))
    clips = LatentClips(train_eps, model.vae, model.config, cfg.data.cache_dir)
    val_clips = LatentClips(val_eps, model.vae, model.config, cfg.data.cache_dir)
    modalities = clips.modalities()
    without = [m for m in modalities if not _renders(model, m)]
    if without:
        raise ValueError(
            f"stage 'renderer' fits the action field's renderer, which the worlds of {without} lack: "
            "set model: {extensions: {action_field: {render: true}}}"
        )

    def error(data: LatentClips, modality: str, rng, parting: float, shuffle: bool = False) -> torch.Tensor:
        batch = data.sample(cfg.batch_size, modality, rng, parting)
        target = batch.target.to(device)
        acts = {k: v.to(device) for k, v in batch.actions.items()}
        if shuffle:
            acts = {k: v.roll(1, dims=0) for k, v in acts.items()}
        return render_error(target, net(acts, target.shape))

    def loss(rng: np.random.Generator, gen: torch.Generator) -> dict[str, torch.Tensor]:
        render = sum(error(clips, m, rng, cfg.for_modality("parting_prob", m)) for m in modalities) / len(modalities)
        return {"total": render, "render": render}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        def val_render(modality: str, shuffle: bool) -> float:
            rng = np.random.default_rng(1234)
            return float(np.mean([error(val_clips, modality, rng, 0.5, shuffle).item() for _ in range(4)]))

        metrics = {}
        for m in modalities:
            metrics[f"val_render/{m}"] = val_render(m, False)
            # Another sample's commands: how much of the drawing the commands decide.
            metrics[f"render_gap/{m}"] = val_render(m, True) - metrics[f"val_render/{m}"]
        return metrics

    return Stage(model, net, loss, evaluate, lambda path: model.save_pretrained(path))


def world_model_stage(cfg: TrainConfig, train_eps, val_eps, device, wrap) -> Stage:
    if cfg.stage == "backbone":
        vae = _load_vae(cfg.init_from)
        config = _model_config(cfg).replace(vae={k: v for k, v in vae.config.items() if not k.startswith("_")})
        model = AstraWorldModel(config, vae=vae)
        # Action-free video continuation: the whole transformer and the history embedders learn.
        model.requires_grad_(False)
        model.backbone.requires_grad_(True)
        model.history_embedder.requires_grad_(True)
    else:
        model = _stage_three_model(cfg, train_eps)
        config = model.config
    # The default start frame of `astra-rollout` comes from a world of the model's first modality, which is
    # the one its demo command drives (the base's when this stage has no data of that world).
    first = next(iter(config.modalities))
    own = next((ep.frames[0] for ep in train_eps if first in ep.actions), None)
    model.seed_frame = next(f for f in (own, model.seed_frame, train_eps[0].frames[0]) if f is not None)
    model.to(device).train()
    if device.type == "cuda":
        model.gradient_checkpointing = True
    net = wrap(model)
    clips = LatentClips(train_eps, model.vae, config, cfg.data.cache_dir)
    val_clips = LatentClips(val_eps, model.vae, config, cfg.data.cache_dir)
    # One micro-batch per domain in both stages, so every world is seen equally; the backbone drops the actions.
    modalities = clips.modalities()
    use_aug = cfg.ablation != "no_noise_aug"

    def batch_loss(data: LatentClips, modality, rng, gen, evaluating=False, shuffle=False, parting: float = 0.0):
        batch = data.sample(cfg.batch_size, modality, rng, parting)
        batch.history.latents = batch.history.latents.to(device)
        acts = {k: v.to(device) for k, v in batch.actions.items()} if cfg.stage == "astra" else None
        if shuffle:
            # Another sample's commands for the same history: what the loss owes to the actions.
            acts = {k: v.roll(1, dims=0) for k, v in acts.items()}
        return flow_matching_loss(
            model,
            batch.target.to(device),
            batch.history,
            acts,
            gen,
            noise_augmentation=use_aug and not evaluating,
            action_dropout=not evaluating,
            forward=net,
            # Evaluation is never a family batch, so it has no pair term.
            family=batch.family and not evaluating,
            field_render_weight=0.0 if evaluating else cfg.for_modality("field_render_weight", modality),
            pair_weight=cfg.for_modality("pair_weight", modality),
        )

    def loss(rng: np.random.Generator, gen: torch.Generator) -> dict[str, torch.Tensor]:
        terms = [batch_loss(clips, m, rng, gen, parting=cfg.for_modality("parting_prob", m)) for m in modalities]
        names = ("total", "flow", "load_balance", "render", "pair")
        return {name: sum(getattr(t, name) for t in terms) / len(terms) for name in names}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        # Clean history and every action kept, so the numbers compare across runs and ablations.
        def val_terms(modality, shuffle: bool = False, parting: float = 0.0) -> dict[str, float]:
            rng, gen = np.random.default_rng(1234), torch.Generator().manual_seed(1234)
            terms = [batch_loss(val_clips, modality, rng, gen, True, shuffle, parting) for _ in range(4)]
            return {name: float(np.mean([getattr(t, name).item() for t in terms])) for name in ("flow", "render")}

        def val_flow(modality, shuffle: bool = False, parting: float = 0.0) -> float:
            return val_terms(modality, shuffle, parting)["flow"]

        own = {m: val_terms(m) for m in modalities}
        metrics = {f"val_flow/{m}": terms["flow"] for m, terms in own.items()}
        metrics["val_flow"] = float(np.mean(list(metrics.values())))
        metrics.update({f"val_render/{m}": terms["render"] for m, terms in own.items() if _renders(model, m)})
        if cfg.stage == "astra":
            # Same clips and noise with the commands swapped between samples: > 0 once actions are used.
            for m in modalities:
                metrics[f"action_gap/{m}"] = val_flow(m, shuffle=True) - metrics[f"val_flow/{m}"]
                if val_clips.partings.get(m):
                    # The same where validation branches part: one history, so only the commands differ.
                    metrics[f"parting_gap/{m}"] = val_flow(m, True, 1.0) - val_flow(m, False, 1.0)
        return metrics

    return Stage(model, net, loss, evaluate, lambda path: model.save_pretrained(path))


# -- the shared loop ---------------------------------------------------------------------------------
def _trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, module, optimizer, step: int, rng: np.random.Generator, gen) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {n: p.detach().cpu().contiguous() for n, p in _trainable(module).items()},
        str(directory / "trainable.safetensors"),
        metadata={"format": FORMAT},
    )
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": gen.get_state()}, directory / "optimizer.pt")
    (directory / "state.json").write_text(json.dumps({"step": step, "numpy_rng": rng.bit_generator.state}))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def load_checkpoint(directory: Path, module, optimizer, rng: np.random.Generator, gen) -> int:
    weights = _read_trainable(directory / "trainable.safetensors", module)
    params = _trainable(module)
    if set(weights) != set(params):
        raise ValueError(f"{directory}: checkpoint parameters do not match this stage's trainable parameters")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    extra = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    gen.set_state(extra["torch_rng"])
    state = json.loads((directory / "state.json").read_text())
    rng.bit_generator.state = state["numpy_rng"]
    return int(state["step"])


def _read_trainable(path: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors saved at `path` for `module`, a world model's with today's names (`astra_model.formats`)."""
    config = getattr(module, "config", None)
    return read_model_weights(path, config) if isinstance(config, AstraConfig) else read_weights(path)


def warm_start(module: torch.nn.Module, directory: Path) -> list[str]:
    """Copy into `module`'s trainable parameters the tensors of the same name and shape saved in
    `directory` (a checkpoint's `trainable.safetensors`, else a model's `model.safetensors`); returns the
    names left as initialised. An encoder saved before its modality was read with its targets is widened
    (`encoder_with_targets`), and so is an action field saved narrower or without a renderer to read
    (`widened`). A separate world's weight that `directory` lacks (its world was shared there) starts from
    the shared weight it copies. Raises ValueError when nothing matches."""
    file = directory / "trainable.safetensors"
    weights = _read_trainable(file if file.is_file() else directory / WEIGHTS_NAME, module)
    params = _trainable(module)
    config = getattr(module, "config", None)
    readings = config.extensions.relative_commands if isinstance(config, AstraConfig) else {}
    for modality in [m for m, reading in readings.items() if reading == "change_and_target"]:
        for name in [n for n in weights if n.endswith(f"moae.encoders.{modality}.weight")]:
            if name in params and weights[name].shape != params[name].shape:
                weights[name] = encoder_with_targets(weights[name], config.modalities[modality], config.stacked_frames)
                print(f"warm start: {name} widened to read {modality}'s targets, their columns zero")
    for name in [n for n in weights if (".action_field.net." in n or ".action_field.renderer." in n) and n in params]:
        if weights[name].shape != params[name].shape:
            weights[name] = widened(weights[name], params[name].detach())
            print(f"warm start: {name} widened to {list(params[name].shape)}")
    shared_names = module.shared_names() if hasattr(module, "shared_names") else {}
    from_shared = [n for n, shared in shared_names.items() if n not in weights and shared in weights]
    for name in from_shared:
        weights[name] = weights[shared_names[name]]
    if from_shared:
        print(f"warm start: {len(from_shared)} tensors of separate worlds start from the shared weights they copy")
    matched = [n for n, p in params.items() if n in weights and weights[n].shape == p.shape]
    if not matched:
        raise ValueError(f"{directory}: no trainable parameter of this stage has a tensor of its name and shape there")
    with torch.no_grad():
        for name in matched:
            params[name].copy_(weights[name])
    fresh = sorted(set(params) - set(matched))
    print(f"warm start from {directory}: {len(matched)} of {len(params)} trainable tensors; fresh: {fresh}")
    return fresh


def _renders(model: AstraWorldModel, modality: str) -> bool:
    """Whether the world `modality` commands has an action field with a renderer."""
    field = model.action_field_of([modality])
    return field is not None and field.renderer is not None


def param_groups(params: dict[str, torch.nn.Parameter], lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, one per multiplier of `lr_scale` (see `TrainConfig.lr_scale`), each
    with its `lr_scale`. Raises ValueError for a key that names no trainable parameter (a typo would
    otherwise train everything at 1)."""
    scales = {name: next((s for key, s in lr_scale.items() if key in name), 1.0) for name in params}
    unused = [key for key in lr_scale if not any(key in name for name in params)]
    if unused:
        raise ValueError(f"lr_scale keys {unused} name no trainable parameter of this stage")
    return [
        {"params": [p for n, p in params.items() if scales[n] == scale], "lr_scale": scale}
        for scale in dict.fromkeys(scales.values())
    ]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(cfg: TrainConfig, train_eps: list[VideoEpisode], val_eps: list[VideoEpisode], resume: bool = False) -> Path:
    """Run the stage `cfg` on the episodes (`resume`: from the latest checkpoint in `cfg.out_dir`); returns the
    folder of its final model."""
    rank, world, device = init_distributed()
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    build = {"vae": vae_stage, "decoder": decoder_stage, "renderer": renderer_stage}.get(cfg.stage, world_model_stage)

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)

    stage = build(cfg, train_eps, val_eps, device, wrap)
    trainable = _trainable(stage.module)
    params = list(trainable.values())
    optimizer = torch.optim.AdamW(param_groups(trainable, cfg.lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng, gen = np.random.default_rng(cfg.seed + rank), torch.Generator().manual_seed(cfg.seed + rank)
    step = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        step = load_checkpoint(ckpt, stage.module, optimizer, rng, gen)
        print(f"resumed from {ckpt} at step {step}")
    elif cfg.warm_start:
        # Only a fresh run: a resumed one gets every trainable tensor from its own checkpoint.
        warm_start(stage.module, Path(cfg.warm_start))
    writer = SummaryWriter(str(out / "tb")) if rank == 0 else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    end = cfg.end_step
    progress = tqdm(range(step, end), initial=step, total=end, desc=cfg.stage, disable=rank != 0)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group["lr_scale"]
        with autocast:
            terms = stage.loss(rng, gen)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if rank == 0:
            _log(writer, progress, step + 1, cfg, terms, grad_norm, stage, optimizer)
            if (step + 1) % cfg.save_every == 0 or step + 1 == end:
                save_checkpoint(
                    out / "checkpoints" / f"step_{step + 1:07d}", stage.module, optimizer, step + 1, rng, gen
                )
    if rank == 0:
        stage.module.eval()
        stage.save_final(out / "final")
        writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return out / "final"


def _log(writer, progress, step: int, cfg: TrainConfig, terms, grad_norm, stage: Stage, optimizer) -> None:
    if step % cfg.log_every == 0:
        for name, value in terms.items():
            writer.add_scalar(f"train/{name}", value.detach().item(), step)
        writer.add_scalar("train/grad_norm", float(grad_norm), step)
        writer.add_scalar("train/lr", lr_at(step - 1, cfg), step)
        progress.set_postfix(loss=f"{terms['total'].detach().item():.4f}")
    if step % cfg.eval_every == 0 or step == cfg.end_step:
        stage.module.eval()
        for name, value in stage.evaluate().items():
            writer.add_scalar(f"eval/{name}", value, step)
            progress.write(f"step {step}: eval {name} = {value:.4f}")
        stage.module.train()
