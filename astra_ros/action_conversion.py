"""Conversion between ROS action messages and the model's float32 action vectors.

Modalities (names as in the model):

- ``"twist"``: ``geometry_msgs/Twist`` (or ``TwistStamped``) -> 6-D
  ``[linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]`` (m/s, rad/s).
- ``"joints"``: ``sensor_msgs/JointState`` -> positions in a given joint order, matched by name
  (rad or m, as published).
- ``"camera_pose"``: ``geometry_msgs/PoseStamped`` absolute pose -> 7-D ``[x, y, z, qx, qy, qz, qw]``
  with the quaternion normalised.

Only field names are used, so rclpy and rosbags message objects both work; nothing here imports
rclpy. Every conversion refuses NaN/inf with an ``ActionConversionError`` naming the bad fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from astra_ros.image_conversion import build_message, header_fields

MsgT = TypeVar("MsgT")

TWIST_DIM = 6
POSE_DIM = 7
MODALITIES: tuple[str, ...] = ("twist", "joints", "camera_pose")

# The world-model node's command topic per modality (relative names; recordings use them absolute).
COMMAND_TOPICS: dict[str, str] = {"twist": "cmd_vel", "joints": "joint_command", "camera_pose": "camera_pose_cmd"}

# Message types accepted per modality, in the ROS 2 "pkg/msg/Name" form.
ACTION_MSG_TYPES: dict[str, tuple[str, ...]] = {
    "twist": ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"),
    "joints": ("sensor_msgs/msg/JointState",),
    "camera_pose": ("geometry_msgs/msg/PoseStamped",),
}

_TWIST_LABELS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
_POSE_LABELS = (
    "position.x",
    "position.y",
    "position.z",
    "orientation.x",
    "orientation.y",
    "orientation.z",
    "orientation.w",
)
_IDENTITY_POSE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


class ActionConversionError(ValueError):
    """A message or vector cannot be converted to or from an action; the message says why."""


def normalize_type_name(type_name: str) -> str:
    """ROS 2 form of a message type name: ``"geometry_msgs/Twist"`` -> ``"geometry_msgs/msg/Twist"``."""
    parts = type_name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else type_name


def message_type_name(msg: Any) -> str:
    """``"pkg/msg/Name"`` of an rclpy or rosbags message object."""
    msgtype = getattr(msg, "__msgtype__", None)  # set on rosbags classes
    if msgtype is not None:
        return normalize_type_name(msgtype)
    cls = type(msg)
    package = cls.__module__.split(".")[0]  # rclpy modules look like "geometry_msgs.msg._twist"
    return f"{package}/msg/{cls.__name__}"


def modality_for_type(type_name: str) -> str | None:
    """Action modality carried by a message type name, or None if it carries none."""
    normalized = normalize_type_name(type_name)
    for modality, type_names in ACTION_MSG_TYPES.items():
        if normalized in type_names:
            return modality
    return None


def action_dim(modality: str, joint_names: Sequence[str] | None = None) -> int:
    """Length of the action vector of ``modality`` (joints: ``len(joint_names)``)."""
    _check_modality(modality)
    if modality == "twist":
        return TWIST_DIM
    if modality == "camera_pose":
        return POSE_DIM
    return len(_check_joint_names(joint_names))


def msg_to_action(modality: str, msg: Any, joint_names: Sequence[str] | None = None) -> np.ndarray:
    """Convert an action message of ``modality`` to a float32 vector ``[action_dim]``."""
    _check_modality(modality)
    if modality == "twist":
        return twist_to_action(msg)
    if modality == "camera_pose":
        return pose_to_action(msg)
    return joint_state_to_action(msg, _check_joint_names(joint_names))


def twist_to_action(msg: Any) -> np.ndarray:
    """``Twist``/``TwistStamped`` -> float32 ``[6]``: linear xyz (m/s), angular xyz (rad/s)."""
    twist = getattr(msg, "twist", msg)
    lin, ang = twist.linear, twist.angular
    values = np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z], dtype=np.float64)
    _require_finite(values, _TWIST_LABELS, "twist")
    return values.astype(np.float32)


def joint_state_to_action(msg: Any, joint_names: Sequence[str]) -> np.ndarray:
    """``JointState`` -> float32 ``[len(joint_names)]`` positions, ordered as ``joint_names``.

    The message must name exactly the joints of ``joint_names`` (any order), each once.
    """
    names = [str(name) for name in msg.name]
    positions = np.asarray(msg.position, dtype=np.float64)
    if len(names) != len(positions):
        raise ActionConversionError(f"JointState has {len(names)} names but {len(positions)} positions")
    if len(set(names)) != len(names):
        raise ActionConversionError(f"JointState names a joint more than once: {names}")
    missing = [name for name in joint_names if name not in names]
    unknown = [name for name in names if name not in joint_names]
    if missing or unknown:
        raise ActionConversionError(
            f"JointState joints do not match the expected {list(joint_names)}: missing {missing}, unknown {unknown}"
        )
    ordered = positions[[names.index(name) for name in joint_names]]
    _require_finite(ordered, joint_names, "joint positions")
    return ordered.astype(np.float32)


def pose_to_action(msg: Any) -> np.ndarray:
    """``PoseStamped`` (or ``Pose``) -> float32 ``[7]`` ``[x, y, z, qx, qy, qz, qw]``, unit quaternion."""
    pose = getattr(msg, "pose", msg)
    pos, ori = pose.position, pose.orientation
    values = np.array([pos.x, pos.y, pos.z, ori.x, ori.y, ori.z, ori.w], dtype=np.float64)
    return _normalized_pose(values, "pose").astype(np.float32)


def neutral_action(modality: str, dim: int) -> np.ndarray:
    """Action meaning "no command": zeros for twist and joints, identity pose for camera_pose.

    Zeros are a real joint configuration, so for joints callers usually hold the last (or first)
    command instead; this value is for callers that have decided to use it.
    """
    _check_modality(modality)
    expected = {"twist": TWIST_DIM, "camera_pose": POSE_DIM}.get(modality)
    if dim <= 0 or (expected is not None and dim != expected):
        raise ActionConversionError(f"invalid dimension {dim} for {modality} actions")
    if modality == "camera_pose":
        return np.array(_IDENTITY_POSE, dtype=np.float32)
    return np.zeros(dim, dtype=np.float32)


def action_to_msg(
    modality: str,
    vector: ArrayLike,
    msg_type: type[MsgT],
    stamp: Any = None,
    frame_id: str = "",
    joint_names: Sequence[str] | None = None,
) -> MsgT:
    """Inverse of :func:`msg_to_action`: build a ``Twist``, ``JointState`` or ``PoseStamped``.

    Args:
        modality: action modality; ``msg_type`` must be its message class (rclpy or rosbags),
            ``Twist`` for twist.
        vector: ``[action_dim]`` action.
        stamp: header stamp (None, nanoseconds or Time-like); unused for Twist, which has no header.
        frame_id: header frame id (unused for Twist).
        joint_names: joint order of the vector, required for joints.
    """
    values = np.asarray(vector, dtype=np.float64)
    if values.shape != (action_dim(modality, joint_names),):
        raise ActionConversionError(
            f"{modality} action must have shape ({action_dim(modality, joint_names)},), got {values.shape}"
        )
    if modality == "twist":
        _require_finite(values, _TWIST_LABELS, "twist")
        return build_message(msg_type, _twist_fields(values))
    if modality == "camera_pose":
        fields = _pose_fields(_normalized_pose(values, "camera_pose action"))
    else:
        names = _check_joint_names(joint_names)
        _require_finite(values, names, "joint positions")
        fields = _joint_state_fields(values, names)
    return build_message(msg_type, {"header": header_fields(stamp, frame_id), **fields})


def relative_pose(prev: ArrayLike, cur: ArrayLike) -> np.ndarray:
    """Pose ``cur`` expressed in the frame of pose ``prev`` (camera motion between two frames).

    Args:
        prev, cur: ``[7]`` poses ``[x, y, z, qx, qy, qz, qw]`` in a common world frame.

    Returns:
        float32 ``[7]`` ``prev^-1 * cur``; the quaternion has ``qw >= 0`` so that no motion is
        exactly the identity ``[0, 0, 0, 0, 0, 0, 1]``.
    """
    t_prev, r_prev = _pose_parts(prev, "prev")
    t_cur, r_cur = _pose_parts(cur, "cur")
    inv = r_prev.inv()
    return _pose_vector(inv.apply(t_cur - t_prev), inv * r_cur)


def compose_pose(prev: ArrayLike, rel: ArrayLike) -> np.ndarray:
    """Inverse of :func:`relative_pose`: world pose ``prev * rel`` as float32 ``[7]``, ``qw >= 0``."""
    t_prev, r_prev = _pose_parts(prev, "prev")
    t_rel, r_rel = _pose_parts(rel, "rel")
    return _pose_vector(t_prev + r_prev.apply(t_rel), r_prev * r_rel)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ActionConversionError(f"unknown action modality {modality!r} (known: {', '.join(MODALITIES)})")


def _check_joint_names(joint_names: Sequence[str] | None) -> list[str]:
    if not joint_names:
        raise ActionConversionError("the joints modality needs a non-empty joint_names list")
    names = list(joint_names)
    if len(set(names)) != len(names):
        raise ActionConversionError(f"joint_names has duplicates: {names}")
    return names


def _require_finite(values: np.ndarray, labels: Sequence[str], what: str) -> None:
    bad = [f"{label}={value}" for label, value in zip(labels, values, strict=True) if not np.isfinite(value)]
    if bad:
        raise ActionConversionError(f"{what} has non-finite values: {', '.join(bad)}")


def _normalized_pose(values: np.ndarray, what: str) -> np.ndarray:
    _require_finite(values, _POSE_LABELS, what)
    norm = np.linalg.norm(values[3:])
    if norm == 0.0:
        raise ActionConversionError(f"{what} has a zero-norm quaternion")
    return np.concatenate([values[:3], values[3:] / norm])


def _pose_parts(pose: ArrayLike, what: str) -> tuple[np.ndarray, Rotation]:
    values = np.asarray(pose, dtype=np.float64)
    if values.shape != (POSE_DIM,):
        raise ActionConversionError(f"{what} pose must have shape ({POSE_DIM},), got {values.shape}")
    values = _normalized_pose(values, f"{what} pose")
    return values[:3], Rotation.from_quat(values[3:])


def _pose_vector(translation: np.ndarray, rotation: Rotation) -> np.ndarray:
    return np.concatenate([translation, rotation.as_quat(canonical=True)]).astype(np.float32)


def _twist_fields(values: np.ndarray) -> dict[str, Any]:
    x, y, z, ax, ay, az = (float(v) for v in values)
    return {"linear": {"x": x, "y": y, "z": z}, "angular": {"x": ax, "y": ay, "z": az}}


def _pose_fields(values: np.ndarray) -> dict[str, Any]:
    x, y, z, qx, qy, qz, qw = (float(v) for v in values)
    return {"pose": {"position": {"x": x, "y": y, "z": z}, "orientation": {"x": qx, "y": qy, "z": qz, "w": qw}}}


def _joint_state_fields(values: np.ndarray, joint_names: list[str]) -> dict[str, Any]:
    empty = np.zeros(0, dtype=np.float64)
    return {"name": joint_names, "position": values.astype(np.float64), "velocity": empty, "effort": empty}
