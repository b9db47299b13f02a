"""Parameters of the world-model node: declarations with descriptors, and checks that give reasons.

Ranges go into the descriptors, where rclpy enforces them and tools such as ``ros2 param describe``
show them; what a range cannot express (choices, NaN, list contents) is checked by
:func:`check_parameter`, which the node runs as its on-set-parameters callback. Because rclpy also
runs that callback when a parameter is declared, a bad value from a parameter file or the command
line is refused at start-up with the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from astra_model import AstraWorldModel
from astra_model.checkpoint import CheckpointError
from astra_model.config import AstraConfig
from astra_model.worlds import world_modalities
from astra_ros import demo_model_path

QOS_CHOICES = ("sensor_data", "reliable")
DTYPE_CHOICES = ("float32", "bfloat16")
MAX_SEED = 2**31 - 1
SIZE_STEP = 16  # the model's frames must be multiples of 16 pixels (VAE stride x patch size)
MODEL_GUIDANCE = -1.0  # guidance_scale meaning "the model's scale for each world"


class StartupError(RuntimeError):
    """A node cannot start; the message says what to change."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, meaning and constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int, int] | None = None  # from, to, step (0: any integer)
    choices: tuple[str, ...] = ()
    constraints: str = ""

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only)
        constraints = [self.constraints] if self.constraints else []
        if self.choices:
            constraints.append(f"one of: {', '.join(self.choices)}")
        descriptor.additional_constraints = "; ".join(constraints)
        if self.float_range is not None:
            low, high = self.float_range
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        if self.int_range is not None:
            low, high, step = self.int_range
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=step)]
        return descriptor


# Declared before the model is loaded: they decide how it is loaded.
LOAD_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "Astra model folder (save_pretrained layout); empty: the demo model", read_only=True),
    ParamSpec(
        "device", "cpu", "torch device to run the model on", read_only=True, constraints="cpu, cuda or cuda:<index>"
    ),
    ParamSpec("dtype", "float32", "weight and activation dtype", read_only=True, choices=DTYPE_CHOICES),
    ParamSpec(
        "num_threads",
        0,
        "torch intra-op CPU threads; 0 keeps torch's default. 1 avoids thread oversubscription on small or "
        "shared CPUs, where ROS callbacks and torch compete for the same cores",
        read_only=True,
        int_range=(0, 256, 0),
    ),
)

# Independent of the model.
NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("frame_rate", 10.0, "published frames per second (wall clock)", float_range=(0.1, 240.0)),
    ParamSpec(
        "image_width",
        64,
        "width of the grey start frame used when the model has no seed frame (pixels)",
        read_only=True,
        int_range=(SIZE_STEP, 4096, SIZE_STEP),
        constraints="multiple of 16",
    ),
    ParamSpec(
        "image_height",
        64,
        "height of the grey start frame used when the model has no seed frame (pixels)",
        read_only=True,
        int_range=(SIZE_STEP, 4096, SIZE_STEP),
        constraints="multiple of 16",
    ),
    ParamSpec(
        "fov_deg", 60.0, "horizontal field of view of the published pinhole camera_info", float_range=(1.0, 179.0)
    ),
    ParamSpec("frame_id", "camera_optical_frame", "frame_id of published images and camera_info"),
    ParamSpec("image_qos", "sensor_data", "QoS of image topics in and out", read_only=True, choices=QOS_CHOICES),
    ParamSpec("command_qos", "reliable", "QoS of the command subscriptions", read_only=True, choices=QOS_CHOICES),
    ParamSpec(
        "action_timeout",
        0.5,
        "seconds after the last cmd_vel after which the twist returns to zero; 0: never. joint and camera "
        "pose targets hold their last value",
        read_only=True,
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "seed",
        0,
        "random seed of the rollout, applied at start-up and at each reset",
        int_range=(0, MAX_SEED, 0),
    ),
    ParamSpec(
        "publish_clock",
        False,
        "publish /clock in model time: time advances one frame period per published frame",
        read_only=True,
    ),
    ParamSpec(
        "real_time_factor",
        1.0,
        "with publish_clock: model seconds published per wall second; 0: as fast as the model computes. "
        "Without publish_clock it must stay 1",
        read_only=True,
        float_range=(0.0, 1000.0),
    ),
    ParamSpec("imagine_max_candidates", 8, "most candidates one ~/imagine call may ask for", int_range=(1, 256, 0)),
    ParamSpec(
        "imagine_max_chunks", 4, "most chunks one ~/imagine candidate may span (memory bound)", int_range=(1, 64, 0)
    ),
    ParamSpec(
        "imagine_max_batch",
        2,
        "~/imagine candidates rolled out together, between live chunks: more is faster per candidate but needs "
        "more memory and more free time between chunks (see astra_ros.frame_pipeline)",
        int_range=(1, 256, 0),
    ),
    ParamSpec(
        "max_command_rate",
        100.0,
        "most messages a second taken per command topic; within a faster burst the newest waits and replaces "
        "the one before it (counted as superseded in /diagnostics)",
        read_only=True,
        float_range=(1.0, 100000.0),
    ),
)


def model_params(model: AstraWorldModel) -> tuple[ParamSpec, ...]:
    """Parameters whose defaults come from the loaded model."""
    config = model.config
    return (
        ParamSpec(
            "denoising_steps",
            int(config.sampler.steps),
            "Euler denoising steps per chunk (default: the model's)",
            int_range=(1, 1000, 0),
        ),
        ParamSpec(
            "guidance_scale",
            MODEL_GUIDANCE,
            "action-free guidance scale; -1 (default): the model's scale for the world commanded "
            f"(here {_scales(config)}); 0 and 1 need no second denoiser pass",
            float_range=(MODEL_GUIDANCE, 20.0),
            constraints="-1 or a scale in [0, 20]",
        ),
        ParamSpec(
            "chunk_latent_frames",
            int(config.chunk_latent_frames),
            "latent frames per generated chunk: a property of the model, shown here; a different value is refused",
            read_only=True,
            int_range=(1, 1024, 0),
        ),
        ParamSpec(
            "world",
            "",
            "world each episode drives, at start-up and after a reset that names none; empty: the world of the "
            f"first command. This model simulates: {', '.join(world_modalities(config))}",
            constraints="empty or one of the model's worlds",
        ),
        ParamSpec(
            "joint_names",
            list(config.action_labels.get("joints", [])),
            "joint names of the model's joints action, in model order; JointState is matched by name",
            read_only=True,
            constraints="distinct non-empty names, as many as the model's joints dimension",
        ),
    )


def load_model(node: Node) -> tuple[Path, AstraWorldModel]:
    """The model folder and model that the node's `LOAD_PARAMS` name (declared first)."""
    value = node.get_parameter("checkpoint").value
    path = Path(value or demo_model_path())
    if not path.is_dir():
        hint = "" if value else "the demo model is not installed; "
        raise StartupError(
            f"model folder {path} does not exist: {hint}pass a model folder with "
            "--ros-args -p checkpoint:=/path/to/model"
        )
    device = node.get_parameter("device").value
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StartupError(f"device {device!r} asked for, but torch sees no CUDA device: use device:=cpu")
    if node.get_parameter("num_threads").value:
        torch.set_num_threads(node.get_parameter("num_threads").value)
    try:
        model = AstraWorldModel.from_pretrained(path, device=device)
    except (CheckpointError, OSError) as err:
        raise StartupError(f"cannot load the model: {err}") from err
    return path, model.to(getattr(torch, node.get_parameter("dtype").value))


def declare(node: Node, specs: Sequence[ParamSpec]) -> None:
    for spec in specs:
        # An empty list carries no element type, so such a default is declared by type alone.
        default = Parameter.Type.STRING_ARRAY if spec.default == [] else spec.default
        node.declare_parameter(spec.name, default, spec.descriptor())


_SPECS = {spec.name: spec for spec in (*LOAD_PARAMS, *NODE_PARAMS)}


def check_parameter(name: str, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for ``name``, or None if it is.

    Covers what descriptor ranges cannot; rclpy checks types and ranges itself.
    """
    spec = _SPECS.get(name)
    if spec is not None and spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if name == "device":
        return _check_device(value)
    if name == "frame_id" and not value:
        return "frame_id must not be empty"
    if name == "joint_names":
        return _check_joint_names(value)
    if name == "guidance_scale" and MODEL_GUIDANCE < value < 0:
        return f"guidance_scale must be -1 (the model's) or a scale in [0, 20], got {value}"
    return None


def _scales(config: AstraConfig) -> str:
    scales = {name: world.guidance_scale for name, world in config.worlds.items()}
    worlds = "".join(f", {world} {scale}" for world, scale in scales.items() if scale is not None)
    return f"{config.sampler.guidance_scale}{worlds}"


def _check_device(value: str) -> str | None:
    if value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {value!r}"


def _check_joint_names(names: Sequence[str] | None) -> str | None:
    if names is None:
        return None
    if any(not name for name in names):
        return "joint_names must not contain empty names"
    if len(set(names)) != len(names):
        return f"joint_names has duplicates: {list(names)}"
    return None
