"""Conversion between ``sensor_msgs/Image`` messages and RGB numpy arrays, plus message-building helpers.

Works on rclpy message objects and on rosbags-deserialized message objects alike: only the field
names of ``sensor_msgs/msg/Image`` are used. Nothing here imports rclpy or cv_bridge at import time.

Conventions follow cv_bridge and ``sensor_msgs/image_encodings``: ``step`` is the row stride in
bytes and may include padding after the last pixel of a row; ``is_bigendian`` gives the byte order
of 16-bit channels. Sizes are given as ``(height, width)`` throughout, matching the array shape.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np

NS_PER_S = 1_000_000_000

MsgT = TypeVar("MsgT")


class ImageConversionError(ValueError):
    """An image message cannot be converted; the message says which encoding or size is at fault."""


class _Layout(NamedTuple):
    channels: int
    bytes_per_channel: int
    rgb_order: tuple[int, int, int]  # source channel for R, G and B


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, (0, 1, 2)),
    "bgr8": _Layout(3, 1, (2, 1, 0)),
    "rgba8": _Layout(4, 1, (0, 1, 2)),
    "bgra8": _Layout(4, 1, (2, 1, 0)),
    "mono8": _Layout(1, 1, (0, 0, 0)),
    "rgb16": _Layout(3, 2, (0, 1, 2)),
    "bgr16": _Layout(3, 2, (2, 1, 0)),
    "rgba16": _Layout(4, 2, (0, 1, 2)),
    "bgra16": _Layout(4, 2, (2, 1, 0)),
    "mono16": _Layout(1, 2, (0, 0, 0)),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)


def image_msg_to_rgb(msg: Any, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into a new RGB array.

    Args:
        msg: rclpy or rosbags ``sensor_msgs/msg/Image``.
        expected_size: ``(height, width)`` the image must have; a different size is refused
            rather than resized, so a misconfigured camera cannot silently distort the input.

    Returns:
        uint8 array ``[H, W, 3]``. 16-bit channels keep their high byte (value // 256); alpha is
        dropped; mono is replicated to three channels.

    Raises:
        ImageConversionError: unsupported encoding, inconsistent step/data size, or wrong size.
    """
    layout = _check_image(msg, expected_size)
    bridge = _cv_bridge() if _is_rclpy_message(msg) else None
    if bridge is not None:
        return _decode_with_cv_bridge(bridge, msg)
    return _decode(msg, layout)


def rgb_to_image_msg(rgb: np.ndarray, msg_type: type[MsgT], stamp: Any = None, frame_id: str = "") -> MsgT:
    """Build an ``rgb8`` ``sensor_msgs/Image`` of class ``msg_type`` from an RGB array.

    Args:
        rgb: uint8 array ``[H, W, 3]``.
        msg_type: rclpy ``sensor_msgs.msg.Image`` or a rosbags typestore Image class.
        stamp: header stamp: None (zero), integer nanoseconds, or a Time-like object.
        frame_id: header frame id.
    """
    pixels = _check_rgb(rgb)
    header = header_fields(stamp, frame_id)
    bridge = _cv_bridge() if _is_rclpy_message(msg_type) else None
    if bridge is not None:
        msg = bridge.cv2_to_imgmsg(pixels, encoding="rgb8")
        msg.header = build_message(type(msg.header), header)
        return msg
    height, width, _ = pixels.shape
    fields = {
        "header": header,
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": 3 * width,
        "data": pixels.reshape(-1).copy(),  # the message must not alias the caller's array
    }
    return build_message(msg_type, fields)


def build_message(msg_type: type[MsgT], fields: Mapping[str, Any]) -> MsgT:
    """Construct a ROS message from a (nested) mapping of field values.

    rclpy classes are default-constructed and the given fields assigned; rosbags dataclasses have
    no defaults, so every field must be given. Nested messages are given as nested mappings.
    Array fields must be numpy arrays of the ROS element type (uint8 for ``uint8[]``, float64 for
    ``float64[]``): that is the one form both rclpy and the rosbags serializer accept.
    """
    if dataclasses.is_dataclass(msg_type):
        return _build_dataclass(msg_type, fields)
    msg = msg_type()
    for name, value in fields.items():
        if isinstance(value, Mapping):
            value = build_message(type(getattr(msg, name)), value)
        setattr(msg, name, value)
    return msg


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``-like object (``sec``, ``nanosec``)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_fields(stamp_ns: int) -> dict[str, int]:
    """``builtin_interfaces/Time`` fields for a time in nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return {"sec": sec, "nanosec": nanosec}


def header_fields(stamp: Any, frame_id: str) -> dict[str, Any]:
    """``std_msgs/Header`` fields; ``stamp`` is None (zero), nanoseconds, or a Time-like object."""
    if stamp is None:
        stamp_ns = 0
    elif isinstance(stamp, (int, np.integer)):
        stamp_ns = int(stamp)
    else:
        stamp_ns = stamp_to_ns(stamp)
    return {"stamp": stamp_fields(stamp_ns), "frame_id": frame_id}


def _build_dataclass(msg_type: type[MsgT], fields: Mapping[str, Any]) -> MsgT:
    annotations = {field.name: field.type for field in dataclasses.fields(msg_type)}
    values = {}
    for name, value in fields.items():
        if isinstance(value, Mapping):
            value = build_message(_resolve_annotation(msg_type, annotations[name]), value)
        values[name] = value
    return msg_type(**values)


def _resolve_annotation(owner: type, annotation: Any) -> type:
    # rosbags generates its classes under `from __future__ import annotations`, so nested message
    # fields are annotated by class name. The names live in the globals the generated code ran in,
    # which sys.modules may no longer point to (rosbags re-creates 'rosbags.usertypes' per register).
    if isinstance(annotation, str):
        return owner.__init__.__globals__[annotation]
    return annotation


def _check_image(msg: Any, expected_size: tuple[int, int] | None) -> _Layout:
    encoding = str(msg.encoding)
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            f"image encoding {encoding!r} is not supported (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    what = f"{encoding} image {height}x{width} (HxW)"
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{what} is empty")
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageConversionError(f"{what}: step {step} is less than width*bytes_per_pixel = {row_bytes}")
    if len(msg.data) < step * height:
        raise ImageConversionError(
            f"{what}: data has {len(msg.data)} bytes, expected at least step*height = {step * height}"
        )
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ImageConversionError(
            f"{what} does not have the expected size {expected_size[0]}x{expected_size[1]} (HxW); "
            "images are not resized here"
        )
    return layout


def _decode(msg: Any, layout: _Layout) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = _as_uint8(msg.data)[: step * height].reshape(height, step)
    rows = buffer[:, : width * layout.channels * layout.bytes_per_channel]
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        rows = (np.ascontiguousarray(rows).view(dtype) >> 8).astype(np.uint8)
    pixels = rows.reshape(height, width, layout.channels)
    return pixels[..., list(layout.rgb_order)]


def _as_uint8(data: Any) -> np.ndarray:
    # rclpy gives array.array('B') (or bytes), rosbags a uint8 ndarray: all expose the buffer protocol.
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ImageConversionError(f"expected a non-empty uint8 RGB array [H, W, 3], got {pixels.dtype} {pixels.shape}")
    return np.ascontiguousarray(pixels)


def _is_rclpy_message(msg_or_type: Any) -> bool:
    cls = msg_or_type if isinstance(msg_or_type, type) else type(msg_or_type)
    return cls.__module__.startswith("sensor_msgs.msg")


@functools.cache
def _cv_bridge() -> Any | None:
    """The real cv_bridge, when installed; it only understands rclpy messages."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def _decode_with_cv_bridge(bridge: Any, msg: Any) -> np.ndarray:
    try:
        pixels = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except TypeError as err:  # cv_bridge.CvBridgeError derives from TypeError
        raise ImageConversionError(f"cv_bridge cannot convert {msg.encoding} image: {err}") from err
    return np.ascontiguousarray(pixels, dtype=np.uint8)
