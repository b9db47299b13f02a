"""Typed configuration for the Astra world model.

`AstraConfig` holds everything needed to rebuild a model: the frozen Wan backbone's diffusers config,
the VAE config, the action modalities, MoAE, the history layout, noise augmentation, the attention
mode and the sampler defaults, which are the paper's; the worlds the model simulates; and our extensions
(`ExtensionsConfig`, `astra_model.extensions`). It round-trips through JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .vae import frames_per_latent

Routing = Literal["learned", "modality"]
AttentionMode = Literal["full", "block_causal"]
ActionGrouping = Literal["stack", "mean"]
CommandReading = Literal["change", "change_and_target"]
COMMAND_READINGS = get_args(CommandReading)

# The world of the modalities that no world of `AstraConfig.worlds` names.
SHARED_WORLD = "shared"


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
    """

    unified_dim: int = 25
    num_experts: int = 3
    top_k: int = 1
    routing: Routing = "learned"
    load_balance_weight: float = 0.01
    modality_experts: dict[str, int] | None = None


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
        guidance_scale: action-free guidance (AFG) scale, where a world sets none of its own.
    """

    steps: int = 50
    shift: float = 5.0
    guidance_scale: float = 2.0


@dataclass
class WorldConfig:
    """One world the model simulates: what one camera sees, commanded by some of the modalities
    (`astra_model.worlds`). A chunk's commands come from one world.

    Args:
        modalities: the modalities that command it.
        own_weights: it runs on its own copy of every weight Astra trains (ours, `astra_model.worlds`):
            training it never moves another world's model, nor theirs it. Otherwise it runs on the
            shared weights, with every other such world.
        guidance_scale: the AFG scale of its chunks; None: `sampler.guidance_scale`. Worlds trained apart
            follow their commands at different scales.
        fixed_camera: a fixed camera sees it: its shown frames keep the last true frame's detail where the
            prediction still matches it (ours, `astra_model.anchoring`); the model's latents are unchanged.
        anchor_tolerance: with `fixed_camera`, how far (grey levels of 255) a decoded pixel may move from
            the last true frame's reconstruction before that frame's detail fades out of it.
    """

    modalities: list[str]
    own_weights: bool = False
    guidance_scale: float | None = None
    fixed_camera: bool = False
    anchor_tolerance: float = 24.0


@dataclass
class ActionFieldConfig:
    """The action field (`astra_model.action_field`).

    Args:
        worlds: the worlds whose weights have a field. The worlds on the shared weights share one, which
            serves those of them it names.
        hidden: width of its two hidden layers. A field saved narrower warm-starts a wider one that
            computes the same (`astra_model.action_field.widened`).
        render: a second MLP of the field's inputs, the renderer, predicts each generated token's clean
            latent, and the field reads that drawing beside its inputs. The renderer learns only from that
            target (`field_render_weight` in training), a direct one for what the commands put where.
    """

    worlds: list[str]
    hidden: int = 128
    render: bool = False


@dataclass
class ExtensionsConfig:
    """Our additions to Astra (`astra_model.extensions`), each off by default. Two more are settings of a
    world (`WorldConfig`): its own weights and its fixed camera.

    Args:
        spatial: each MoAE expert gives three embeddings, mixed per token with its image coordinates
            (`astra_model.spatial`): the action embedding says where the image should change.
        motion: the actions shift and zoom the generated tokens' rotary positions as a camera's motion
            moves its view (`astra_model.view_motion`).
        local_motion: the actions move each generated token's rotary position on its own, read from the
            latest history frame around it (`astra_model.local_motion`): a fixed camera's commands move a
            small mover, not the view.
        action_field: each generated token also gets, in every block, an embedding from a small MLP of its
            latent frame's action features and its image position (`astra_model.action_field`): where a
            joint command shows is a nonlinear function of the angles and the position, which the
            experts' embeddings cannot express. None: no field.
        pose_warp: `relative_poses` modalities whose chunks also see the latest history frame turned by the
            commanded rotation (`astra_model.pose_warp`), each with its camera's vertical field of view in
            degrees. A turning camera's next view is mostly its last one moved by a homography that the
            rotation and the field of view fix; the model is given it instead of learning it.
        relative_commands: modalities commanded as absolute vectors (e.g. joint position targets) that the
            model reads as each frame's change since the command before (`"change"`), or as the change and
            beside it the command itself (`"change_and_target"`, twice the modality's width), as
            `astra_model.relative_commands` describes.
    """

    spatial: bool = False
    motion: bool = False
    local_motion: bool = False
    action_field: ActionFieldConfig | None = None
    pose_warp: dict[str, float] = field(default_factory=dict)
    relative_commands: dict[str, CommandReading] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtensionsConfig:
        """The extensions of a dict as `dataclasses.asdict` writes them."""
        field_config = data.get("action_field")
        return cls(**{**data, "action_field": None if field_config is None else ActionFieldConfig(**field_config)})


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
        action_stats: per modality, `{"mean": [...], "std": [...]}` of each element of the actions
            as the model reads them; MoAE standardises its inputs with them. Physical units differ by
            orders of magnitude (a camera turns by ~0.01 of a quaternion per frame, a robot by ~1
            rad/s), and an encoder would need many steps to scale the small ones up. Stage 3 fills
            them in from its training data; empty means no standardisation.
        worlds: the worlds the model simulates, by name (`WorldConfig`, `astra_model.worlds`). The
            modalities none of them names make one more, `SHARED_WORLD`, on the shared weights; so
            without any, every modality commands that one world.
        extensions: our additions to Astra (`ExtensionsConfig`).
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
    action_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    worlds: dict[str, WorldConfig] = field(default_factory=dict)
    extensions: ExtensionsConfig = field(default_factory=ExtensionsConfig)

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
        """Width of one frame's action as the model reads it (doubled when read with its target)."""
        targets = self.extensions.relative_commands.get(modality) == "change_and_target"
        return self.modalities[modality] * (2 if targets else 1)

    def action_input_dim(self, modality: str) -> int:
        """Input width of a modality's encoder: grouped action plus the history flag."""
        return self.read_dim(modality) * self.stacked_frames + 1

    @property
    def all_worlds(self) -> dict[str, WorldConfig]:
        """Every world the model simulates: `worlds`, after `SHARED_WORLD` when some modality is in none."""
        named = {m for world in self.worlds.values() for m in world.modalities}
        rest = [m for m in self.modalities if m not in named]
        return {SHARED_WORLD: WorldConfig(rest)} | self.worlds if rest else dict(self.worlds)

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
            (math.isfinite(self.sampler.guidance_scale), "sampler.guidance_scale must be finite"),
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
        for name, stats in self.action_stats.items():
            dim = self.read_dim(name) if name in self.modalities else None
            ok = dim is not None and set(stats) == {"mean", "std"} and len(stats["mean"]) == len(stats["std"]) == dim
            if not ok or min(stats["std"]) <= 0:
                raise ValueError(f"AstraConfig: action_stats[{name!r}] needs 'mean' and positive 'std', {dim} each")
        for name in self.relative_poses:
            if self.modalities.get(name) != 7:
                raise ValueError(f"AstraConfig: relative_poses names {name!r}, which is not a 7-D pose modality")
        if self.moae.modality_experts is not None:
            missing = set(self.modalities) - set(self.moae.modality_experts)
            if missing:
                raise ValueError(f"AstraConfig: moae.modality_experts lacks {sorted(missing)}")
        self._validate_worlds()
        self._validate_extensions()

    def _validate_worlds(self) -> None:
        named: list[str] = []
        for name, world in self.worlds.items():
            unknown = sorted(set(world.modalities) - set(self.modalities))
            if not world.modalities or unknown:
                raise ValueError(f"AstraConfig: worlds[{name!r}] must name modalities (unknown: {unknown})")
            if world.anchor_tolerance <= 0:
                raise ValueError(
                    f"AstraConfig: worlds[{name!r}].anchor_tolerance must be > 0 (got {world.anchor_tolerance})"
                )
            if world.guidance_scale is not None and not math.isfinite(world.guidance_scale):
                raise ValueError(f"AstraConfig: worlds[{name!r}].guidance_scale must be finite")
            named += world.modalities
        twice = sorted({m for m in named if named.count(m) > 1})
        if twice:
            raise ValueError(f"AstraConfig: a modality commands one world, but {twice} are in several")
        if SHARED_WORLD in self.worlds and set(named) != set(self.modalities):
            raise ValueError(f"AstraConfig: worlds names {SHARED_WORLD!r}, the world of the modalities in no world")

    def _validate_extensions(self) -> None:
        ext = self.extensions
        for name, reading in ext.relative_commands.items():
            if name not in self.modalities or name in self.relative_poses or reading not in COMMAND_READINGS:
                raise ValueError(
                    f"AstraConfig: extensions.relative_commands names {name!r}, which is not a modality or is in "
                    f"relative_poses, or reads it as {reading!r}, not one of {COMMAND_READINGS}"
                )
        for name, fov in ext.pose_warp.items():
            if name not in self.relative_poses or not 0 < fov < 180:
                raise ValueError(
                    f"AstraConfig: extensions.pose_warp[{name!r}] must name a relative_poses modality with a "
                    f"vertical field of view in (0, 180) degrees, got {fov}"
                )
        field = ext.action_field
        if field is not None and field.hidden < 1:
            raise ValueError(f"AstraConfig: extensions.action_field.hidden must be >= 1, got {field.hidden}")
        if field is not None and (not field.worlds or not set(field.worlds) <= set(self.all_worlds)):
            unknown = sorted(set(field.worlds) - set(self.all_worlds))
            raise ValueError(f"AstraConfig: extensions.action_field.worlds must name worlds (unknown: {unknown})")

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
        for name, sub in _NESTED.items():
            if name in data:
                data[name] = sub(**data[name])
        if "extensions" in data:
            data["extensions"] = ExtensionsConfig.from_dict(data["extensions"])
        data["worlds"] = {name: WorldConfig(**world) for name, world in data.get("worlds", {}).items()}
        return cls(**data)

    def replace(self, **overrides: Any) -> AstraConfig:
        """A copy with some fields replaced. A nested config (and `backbone`, `vae`) may be given as a dict of
        the fields it changes, and `worlds` as the worlds it changes or adds, each world likewise; every other
        value replaces the field's."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key == "worlds":
                data[key] |= {name: _merged(self.worlds.get(name), world) for name, world in value.items()}
            elif key in ("backbone", "vae"):
                data[key] |= value
            else:
                data[key] = _merged(getattr(self, key), value)
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


_NESTED = {"moae": MoAEConfig, "history": HistoryConfig, "noise_aug": NoiseAugConfig, "sampler": SamplerConfig}


def _merged(current: Any, override: Any) -> Any:
    """`override` on `current`: a config (dataclass) takes a dict's fields one by one, recursively, where it
    has one; anything else is replaced."""
    if dataclasses.is_dataclass(override):
        override = dataclasses.asdict(override)
    if not (dataclasses.is_dataclass(current) and isinstance(override, dict)):
        return override
    return dataclasses.asdict(current) | {k: _merged(getattr(current, k, None), v) for k, v in override.items()}
