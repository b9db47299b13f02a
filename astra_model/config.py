"""Typed configuration for the Astra world model.

`AstraConfig` holds everything needed to rebuild a model: the frozen Wan backbone's diffusers config,
the VAE config, the action modalities, MoAE, the history layout, noise augmentation, the attention
mode and the sampler defaults. It round-trips through JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .vae import frames_per_latent

Routing = Literal["learned", "modality"]
AttentionMode = Literal["full", "block_causal"]
ActionGrouping = Literal["stack", "mean"]


@dataclass
class MoAEConfig:
    """Mixture of Action Experts.

    Args:
        unified_dim: width of the shared action space every modality is projected into (25 in the release).
        num_experts: experts per transformer block.
        top_k: experts mixed per latent frame when `routing="learned"`.
        routing: `"learned"` is the paper's router with a load-balancing loss; `"modality"` is the
            released code's fixed routing, one expert per modality.
        load_balance_weight: weight of the Switch-style load-balancing loss (learned routing only).
        modality_experts: expert index per modality for `"modality"` routing; default: declaration order.
        spatial: each expert gives three embeddings, mixed per token as `e_1 + x e_x + y e_y` with the
            token's image coordinates `x, y` in [-1, 1] (ours, not the paper's). Wan tokens carry no
            absolute position in their hidden states (RoPE acts only inside attention), so a broadcast
            action embedding cannot say *where* the image should change; this lets it, the way camera
            models' per-pixel ray (Pluecker) embeddings do, which are also affine in (x, y, 1).
        motion: the actions also move where the generated tokens sit for rotary attention (ours, not
            the paper's). A zero-initialised head maps each latent frame's action features to a shift
            (rows, columns) and a log-zoom, summed over the chunk; a token then attends to the history
            as if it stood where the camera's motion brought its content from. Self-attention can
            copy from a moved position at once, where learning the motion from an added embedding
            alone takes far more data than a CPU run sees.
        local_motion: a second zero-initialised head gives each generated token its own (row, column)
            shift from the latest history frame around it, its image coordinates and the actions
            (ours, `astra_model.local_motion`): a fixed camera's commands move a small mover, not the view.
        action_field: each generated token also gets, in every block, an embedding from a small MLP of
            its latent frame's action features and its image position (ours, `astra_model.action_field`).
            Where a joint command shows is a nonlinear function of the angles and the position, which
            the experts' embeddings (linear in the features, affine across the image) cannot express.
            The MLP's last layer starts at zero.
        field_hidden: width of the action field's two hidden layers. A field saved narrower warm-starts
            a wider one that computes the same (`astra_model.action_field.widened`).
        field_render: a second MLP of the field's inputs, the renderer, predicts each generated token's
            clean latent, and the field reads that drawing beside its inputs (ours). The renderer learns
            only from that target (`field_render_weight`), a direct one for what the commands put where.
    """

    unified_dim: int = 25
    num_experts: int = 3
    top_k: int = 1
    routing: Routing = "learned"
    load_balance_weight: float = 0.01
    modality_experts: dict[str, int] | None = None
    spatial: bool = False
    motion: bool = False
    local_motion: bool = False
    action_field: bool = False
    field_hidden: int = 128
    field_render: bool = False


@dataclass
class HistoryConfig:
    """FramePack-style multi-scale history slots, counted in latent frames.

    The packed history is `[first frame | slots_4x @ 4x | slots_2x @ 2x | slots_1x @ 1x]`; Astra uses
    1 + 16 + 2 + 1 = 20 latent frames. Older frames are dropped, so memory is bounded.

    `with_actions`: history tokens get the MoAE embedding of the commands that produced their frames
    (averaged over a 2x/4x group), beside the history flag. Absolute commands (joint targets, camera
    poses) then come with the command the latest frame was made with. Off, history tokens get the
    flag alone, which is how models trained before this option behave.
    """

    first_frame: bool = True
    slots_4x: int = 16
    slots_2x: int = 2
    slots_1x: int = 1
    with_actions: bool = False

    @property
    def capacity(self) -> int:
        """Most latent frames the memory ever holds."""
        return int(self.first_frame) + self.slots_4x + self.slots_2x + self.slots_1x


@dataclass
class NoiseAugConfig:
    """Noise augmentation of the 1x history latents during training (not given to the model)."""

    prob: float = 0.8
    sigma_min: float = 0.63
    sigma_max: float = 1.0


@dataclass
class SamplerConfig:
    """Flow-matching Euler sampling defaults.

    Args:
        steps: Euler steps per chunk.
        shift: timestep shift of the sigma grid.
        guidance_scale: action-free guidance (AFG) scale.
        world_guidance_scales: AFG scale of chunks commanded by one of `separate_worlds`, by world; the
            others use `guidance_scale`. Worlds trained apart follow their commands at different scales.
    """

    steps: int = 50
    shift: float = 5.0
    guidance_scale: float = 2.0
    world_guidance_scales: dict[str, float] = field(default_factory=dict)

    def scale_for(self, world: str | None) -> float:
        """The AFG scale of a chunk whose actions come from `world` (None: the shared weights')."""
        return float(self.world_guidance_scales.get(world, self.guidance_scale))


def _wan_backbone(heads: int, head_dim: int, text_dim: int, freq_dim: int, ffn_dim: int, layers: int) -> dict[str, Any]:
    """`WanTransformer3DModel` kwargs of a Wan 2.1 text-to-video transformer of the given size."""
    return {
        "patch_size": [1, 2, 2],
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": text_dim,
        "freq_dim": freq_dim,
        "ffn_dim": ffn_dim,
        "num_layers": layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
    }


def _tiny_backbone() -> dict[str, Any]:
    return _wan_backbone(heads=2, head_dim=32, text_dim=32, freq_dim=64, ffn_dim=128, layers=2)


def _tiny_vae() -> dict[str, Any]:
    return {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 2, 2],
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "latents_mean": [0.0] * 16,
        "latents_std": [1.0] * 16,
    }


def _wan13b_backbone() -> dict[str, Any]:
    return _wan_backbone(heads=12, head_dim=128, text_dim=4096, freq_dim=256, ffn_dim=8960, layers=30)


def _wan_vae() -> dict[str, Any]:
    # The AutoencoderKLWan defaults are the Wan 2.1 VAE; an empty dict keeps them.
    return {}


@dataclass
class AstraConfig:
    """Everything that defines an Astra world model.

    Args:
        backbone: `WanTransformer3DModel` config (diffusers keyword arguments).
        vae: `AutoencoderKLWan` config (diffusers keyword arguments).
        modalities: action modality name -> per-video-frame dimension, e.g. `{"twist": 6}`.
        action_grouping: how the per-video-frame actions of one latent frame become one vector:
            `"stack"` concatenates them (keeps their order), `"mean"` averages them (the release's
            one-pose-per-latent-frame format).
        moae: Mixture of Action Experts settings.
        history: multi-scale history layout.
        chunk_latent_frames: latent frames generated per autoregressive step (8 in Astra).
        noise_aug: training-time noise augmentation of the history.
        action_dropout: probability of dropping all actions of a sample in training (for AFG).
        attention: `"full"` attends across [history | chunk] as Astra does; `"block_causal"` keeps the
            history clean (timestep 0) and blind to the chunk, so its keys/values can be cached.
        sampler: sampling defaults.
        text_len: length of the default text context used when no text embedding is given.
        action_labels: optional names of each modality's action elements, e.g. the joint names of
            `joints` in model order (ROS nodes match `sensor_msgs/JointState` by these names).
        relative_poses: modalities commanded as absolute poses `[x, y, z, qx, qy, qz, qw]` that the
            model reads as each frame's pose relative to the frame before (the paper's relative camera
            poses). Rollout sessions and training clips convert them (`astra_model.poses`); the
            forward pass takes the relative poses.
        relative_commands: modalities commanded as absolute vectors (e.g. joint position targets) that
            the model reads as each frame's change since the command before, as it reads poses under
            `relative_poses`: a fixed camera sees a small mover, and where it goes next is how its
            command changes, not the command itself. A session's first change is taken against the
            command before it when known, else it is zero.
        command_targets: `relative_commands` modalities read as the change and, beside it, the
            command itself (`[change, target]`, twice the modality's width): the change tells two
            futures from one state apart, the target says where the mover ends up, so the model need
            not read its pose from the pixels.
        action_stats: per modality, `{"mean": [...], "std": [...]}` of each element of the actions
            as the model reads them; MoAE standardises its inputs with them. Physical units differ by
            orders of magnitude (a camera turns by ~0.01 of a quaternion per frame, a robot by ~1
            rad/s), and an encoder would need many steps to scale the small ones up. Stage 3 fills
            them in from its training data; empty means no standardisation.
        fixed_camera: modalities whose worlds a fixed camera sees (e.g. an arm's joints). A rollout
            chunk commanded only by these draws its still pixels from the last true frame
            (`astra_model.anchoring`); the model's latents are unchanged.
        anchor_tolerance: how far (grey levels of 255) a decoded pixel may move from the last true
            frame's reconstruction before that frame's detail fades out of it.
        separate_worlds: modalities whose worlds run on their own copy of every weight Astra trains
            (`astra_model.worlds`): training one of them never moves the others' model, nor theirs it.
            A copy starts as the shared weights, so a new separate world computes what the shared model
            does. A call's actions then come from one world: a separate modality alone, or only shared
            ones (a call without actions runs the shared weights).
        pose_warp: `relative_poses` modalities whose chunks also see the latest history frame turned by
            the commanded rotation (`astra_model.pose_warp`), each with its camera's vertical field of
            view in degrees. A turning camera's next view is mostly its last one moved by a homography
            that the rotation and the field of view fix; the model is given it instead of learning it.
    """

    backbone: dict[str, Any] = field(default_factory=_tiny_backbone)
    vae: dict[str, Any] = field(default_factory=_tiny_vae)
    modalities: dict[str, int] = field(default_factory=lambda: {"twist": 6})
    action_grouping: ActionGrouping = "stack"
    moae: MoAEConfig = field(default_factory=MoAEConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    chunk_latent_frames: int = 8
    noise_aug: NoiseAugConfig = field(default_factory=NoiseAugConfig)
    action_dropout: float = 0.05
    attention: AttentionMode = "full"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    text_len: int = 1
    action_labels: dict[str, list[str]] = field(default_factory=dict)
    relative_poses: list[str] = field(default_factory=list)
    relative_commands: list[str] = field(default_factory=list)
    command_targets: list[str] = field(default_factory=list)
    action_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fixed_camera: list[str] = field(default_factory=list)
    anchor_tolerance: float = 24.0
    separate_worlds: list[str] = field(default_factory=list)
    pose_warp: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived quantities ------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("z_dim", 16))

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame (after the first): 2 ** (number of temporal downsamples)."""
        return frames_per_latent(self.vae.get("temperal_downsample", [False, True, True]))

    @property
    def spatial_ratio(self) -> int:
        return 2 ** (len(self.vae.get("dim_mult", [1, 2, 4, 4])) - 1)

    @property
    def frames_per_chunk(self) -> int:
        """Video frames produced by one autoregressive step."""
        return self.chunk_latent_frames * self.temporal_ratio

    @property
    def dim(self) -> int:
        return int(self.backbone["num_attention_heads"] * self.backbone["attention_head_dim"])

    @property
    def stacked_frames(self) -> int:
        """Video frames whose actions one latent frame's encoder input lays side by side: `temporal_ratio`
        under "stack" grouping, 1 under "mean"."""
        return self.temporal_ratio if self.action_grouping == "stack" else 1

    def read_dim(self, modality: str) -> int:
        """Width of one frame's action as the model reads it (doubled under `command_targets`)."""
        return self.modalities[modality] * (2 if modality in self.command_targets else 1)

    def action_input_dim(self, modality: str) -> int:
        """Input width of a modality's encoder: grouped action plus the history flag."""
        return self.read_dim(modality) * self.stacked_frames + 1

    def expert_of(self, modality: str) -> int:
        if self.moae.modality_experts is not None:
            return self.moae.modality_experts[modality]
        return list(self.modalities).index(modality) % self.moae.num_experts

    # -- validation --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        checks = [
            (
                self.attention in ("full", "block_causal"),
                f"attention must be 'full' or 'block_causal', got {self.attention!r}",
            ),
            (
                self.action_grouping in ("stack", "mean"),
                f"action_grouping must be 'stack' or 'mean', got {self.action_grouping!r}",
            ),
            (
                self.moae.routing in ("learned", "modality"),
                f"moae.routing must be 'learned' or 'modality', got {self.moae.routing!r}",
            ),
            (self.moae.num_experts >= 1, "moae.num_experts must be >= 1"),
            (self.moae.action_field or not self.moae.field_render, "moae.field_render needs moae.action_field"),
            (self.moae.field_hidden >= 1, f"moae.field_hidden must be >= 1, got {self.moae.field_hidden}"),
            (1 <= self.moae.top_k <= self.moae.num_experts, "moae.top_k must be in [1, num_experts]"),
            (self.chunk_latent_frames >= 1, "chunk_latent_frames must be >= 1"),
            (0.0 <= self.noise_aug.prob <= 1.0, "noise_aug.prob must be in [0, 1]"),
            (
                0.0 <= self.noise_aug.sigma_min <= self.noise_aug.sigma_max <= 1.0,
                "noise_aug sigmas must satisfy 0 <= min <= max <= 1",
            ),
            (0.0 <= self.action_dropout <= 1.0, "action_dropout must be in [0, 1]"),
            (self.sampler.steps >= 1, "sampler.steps must be >= 1"),
            (self.sampler.shift > 0, "sampler.shift must be > 0"),
            (
                all(map(math.isfinite, (self.sampler.guidance_scale, *self.sampler.world_guidance_scales.values()))),
                "sampler guidance scales must be finite",
            ),
            (self.text_len >= 1, "text_len must be >= 1"),
            (len(self.modalities) >= 1, "at least one action modality is required"),
            (
                all(int(d) >= 1 for d in self.modalities.values()),
                f"modality dimensions must be >= 1: {self.modalities}",
            ),
            (
                list(self.backbone.get("patch_size", [1, 2, 2])) == [1, 2, 2],
                "the history embedders assume the Wan patch size (1, 2, 2)",
            ),
            (
                int(self.backbone.get("in_channels", 16)) == self.latent_channels,
                "backbone in_channels must equal vae z_dim",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"AstraConfig: {message}")
        for name, labels in self.action_labels.items():
            if name not in self.modalities or len(labels) != self.modalities[name]:
                raise ValueError(f"AstraConfig: action_labels[{name!r}] must name each of the modality's elements")
        untargeted = set(self.command_targets) - set(self.relative_commands)
        if untargeted:
            raise ValueError(f"AstraConfig: command_targets names {sorted(untargeted)}, not in relative_commands")
        for name, stats in self.action_stats.items():
            dim = self.read_dim(name) if name in self.modalities else None
            ok = dim is not None and set(stats) == {"mean", "std"} and len(stats["mean"]) == len(stats["std"]) == dim
            if not ok or min(stats["std"]) <= 0:
                raise ValueError(f"AstraConfig: action_stats[{name!r}] needs 'mean' and positive 'std', {dim} each")
        for name in self.relative_poses:
            if self.modalities.get(name) != 7:
                raise ValueError(f"AstraConfig: relative_poses names {name!r}, which is not a 7-D pose modality")
        for name in self.relative_commands:
            if name not in self.modalities or name in self.relative_poses:
                raise ValueError(
                    f"AstraConfig: relative_commands names {name!r}, which is not a modality or is in relative_poses"
                )
        unknown = set(self.fixed_camera) - set(self.modalities)
        if unknown or self.anchor_tolerance <= 0:
            raise ValueError(
                f"AstraConfig: fixed_camera must name modalities (unknown: {sorted(unknown)}) "
                f"and anchor_tolerance must be > 0 (got {self.anchor_tolerance})"
            )
        if not set(self.separate_worlds) <= set(self.modalities):
            unknown = sorted(set(self.separate_worlds) - set(self.modalities))
            raise ValueError(f"AstraConfig: separate_worlds must name modalities (unknown: {unknown})")
        if not set(self.sampler.world_guidance_scales) <= set(self.separate_worlds):
            unknown = sorted(set(self.sampler.world_guidance_scales) - set(self.separate_worlds))
            raise ValueError(f"AstraConfig: sampler.world_guidance_scales must name separate_worlds (not: {unknown})")
        for name, fov in self.pose_warp.items():
            if name not in self.relative_poses or not 0 < fov < 180:
                raise ValueError(
                    f"AstraConfig: pose_warp[{name!r}] must name a relative_poses modality with a vertical field "
                    f"of view in (0, 180) degrees, got {fov}"
                )
        if self.moae.modality_experts is not None:
            missing = set(self.modalities) - set(self.moae.modality_experts)
            if missing:
                raise ValueError(f"AstraConfig: moae.modality_experts lacks {sorted(missing)}")

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AstraConfig:
        data = copy.deepcopy(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"AstraConfig: unknown fields {sorted(unknown)}")
        nested = {
            "moae": MoAEConfig,
            "history": HistoryConfig,
            "noise_aug": NoiseAugConfig,
            "sampler": SamplerConfig,
        }
        for name, sub in nested.items():
            if name in data:
                data[name] = sub(**data[name])
        return cls(**data)

    def replace(self, **overrides: Any) -> AstraConfig:
        """A copy with some fields replaced; nested configs may be given as dicts of their fields."""
        data = self.to_dict()
        for key, value in overrides.items():
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            nested = key in ("moae", "history", "noise_aug", "sampler", "backbone", "vae")
            if nested and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return AstraConfig.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> AstraConfig:
        """Named configurations: `"wan2.1-t2v-1.3b"` (the paper's model) and `"tiny"` (tests, CPU demos)."""
        if name == "wan2.1-t2v-1.3b":
            return cls(
                backbone=_wan13b_backbone(),
                vae=_wan_vae(),
                modalities={"camera_pose": 7, "twist": 6, "joints": 7},
                moae=MoAEConfig(unified_dim=25, num_experts=3, top_k=1, routing="learned"),
                history=HistoryConfig(),
                chunk_latent_frames=8,
                noise_aug=NoiseAugConfig(prob=0.8, sigma_min=0.63, sigma_max=1.0),
                sampler=SamplerConfig(steps=50, shift=5.0, guidance_scale=2.0),
                text_len=512,
            )
        if name == "tiny":
            return cls(
                backbone=_tiny_backbone(),
                vae=_tiny_vae(),
                modalities={"twist": 6, "joints": 4, "camera_pose": 7},
                moae=MoAEConfig(unified_dim=16, num_experts=3, top_k=1, routing="learned"),
                history=HistoryConfig(first_frame=True, slots_4x=4, slots_2x=2, slots_1x=1),
                chunk_latent_frames=2,
                noise_aug=NoiseAugConfig(prob=0.8, sigma_min=0.1, sigma_max=0.5),
                sampler=SamplerConfig(steps=8, shift=3.0, guidance_scale=2.0),
                text_len=1,
                action_labels={
                    "twist": ["linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z"],
                    "joints": ["joint1", "joint2", "joint3", "joint4"],
                    "camera_pose": ["x", "y", "z", "qx", "qy", "qz", "qw"],
                },
            )
        raise ValueError(f"unknown preset {name!r}; choose 'wan2.1-t2v-1.3b' or 'tiny'")
