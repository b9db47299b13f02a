"""sensor_msgs/Image <-> RGB conversion, on real rclpy messages and rosbags typestore messages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image as RclpyImage

from astra_ros import image_conversion
from astra_ros.image_conversion import (
    ImageConversionError,
    build_message,
    image_msg_to_rgb,
    rgb_to_image_msg,
    stamp_fields,
    stamp_to_ns,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
RosbagsImage = TYPESTORE.types["sensor_msgs/msg/Image"]
IMAGE_CLASSES = pytest.mark.parametrize("image_cls", [RclpyImage, RosbagsImage], ids=["rclpy", "rosbags"])

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)


def make_image(
    image_cls: type,
    encoding: str,
    pixels: np.ndarray,
    step: int | None = None,
    is_bigendian: int = 0,
    pad_byte: int = 0xEE,
) -> object:
    """Image whose rows are the raw bytes of ``pixels`` [H, W(, C)] followed by padding up to ``step``."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1)
    step = rows.shape[1] if step is None else step
    data = np.full((height, step), pad_byte, dtype=np.uint8)
    data[:, : rows.shape[1]] = rows
    return build_message(
        image_cls,
        {
            "header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": "cam"},
            "height": height,
            "width": width,
            "encoding": encoding,
            "is_bigendian": is_bigendian,
            "step": step,
            "data": data.reshape(-1),
        },
    )


@IMAGE_CLASSES
@pytest.mark.parametrize(
    ("encoding", "raw", "expected"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[..., ::-1], RGB),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 77, np.uint8)]), RGB),
        ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
        ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
    ],
)
def test_8bit_encodings_decode_to_rgb(image_cls: type, encoding: str, raw: np.ndarray, expected: np.ndarray) -> None:
    rgb = image_msg_to_rgb(make_image(image_cls, encoding, np.ascontiguousarray(raw)))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb, expected)


@IMAGE_CLASSES
def test_bgr_channel_order_and_alpha_dropped(image_cls: type) -> None:
    bgr = make_image(image_cls, "bgr8", np.array([[[10, 20, 30]]], np.uint8))
    bgra = make_image(image_cls, "bgra8", np.array([[[10, 20, 30, 0], [1, 2, 3, 255]]], np.uint8))
    rgba = make_image(image_cls, "rgba8", np.array([[[10, 20, 30, 0], [1, 2, 3, 255]]], np.uint8))
    assert image_msg_to_rgb(bgr).tolist() == [[[30, 20, 10]]]
    assert image_msg_to_rgb(bgra).tolist() == [[[30, 20, 10], [3, 2, 1]]]
    assert image_msg_to_rgb(rgba).tolist() == [[[10, 20, 30], [1, 2, 3]]]


@IMAGE_CLASSES
def test_padded_step_is_honoured(image_cls: type) -> None:
    pixels = RNG.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    msg = make_image(image_cls, "rgb8", pixels, step=16)  # 15 pixel bytes + 1 padding byte per row
    np.testing.assert_array_equal(image_msg_to_rgb(msg), pixels)


@IMAGE_CLASSES
@pytest.mark.parametrize("is_bigendian", [1, 0], ids=["big", "little"])
def test_mono16_keeps_high_byte_in_either_byte_order(image_cls: type, is_bigendian: int) -> None:
    values = np.array([[0, 255, 256, 0x1234, 65535]], dtype=">u2" if is_bigendian else "<u2")
    msg = make_image(image_cls, "mono16", values, step=12, is_bigendian=is_bigendian)
    assert image_msg_to_rgb(msg)[0, :, 0].tolist() == [0, 0, 1, 0x12, 255]
    assert image_msg_to_rgb(msg)[0, 3].tolist() == [0x12, 0x12, 0x12]


@IMAGE_CLASSES
def test_rgb16_big_endian_and_bgr16_little_endian(image_cls: type) -> None:
    rgb16 = np.array([[[0x0102, 0x0304, 0xFF00], [0x8000, 0x00FF, 0x7FFF]]])
    big = make_image(image_cls, "rgb16", rgb16.astype(">u2"), is_bigendian=1)
    little_bgr = make_image(image_cls, "bgr16", rgb16[..., ::-1].astype("<u2"), is_bigendian=0)
    expected = [[[1, 3, 255], [128, 0, 127]]]
    assert image_msg_to_rgb(big).tolist() == expected
    assert image_msg_to_rgb(little_bgr).tolist() == expected


@IMAGE_CLASSES
@pytest.mark.parametrize("encoding", ["yuv422", "32FC1", "bayer_rggb8", "8UC3"])
def test_unsupported_encoding_is_refused_naming_it(image_cls: type, encoding: str) -> None:
    msg = make_image(image_cls, encoding, RGB)
    with pytest.raises(ImageConversionError, match=rf"{encoding}.*not supported"):
        image_msg_to_rgb(msg)


@IMAGE_CLASSES
def test_truncated_data_is_refused(image_cls: type) -> None:
    msg = make_image(image_cls, "rgb8", RGB)
    msg.data = np.asarray(msg.data, dtype=np.uint8)[:-1]
    with pytest.raises(ImageConversionError, match=r"data has 35 bytes, expected at least step\*height = 36"):
        image_msg_to_rgb(msg)


@IMAGE_CLASSES
def test_step_smaller_than_row_is_refused(image_cls: type) -> None:
    msg = make_image(image_cls, "rgb8", RGB)
    msg.step = 11
    with pytest.raises(ImageConversionError, match=r"step 11 is less than width\*bytes_per_pixel = 12"):
        image_msg_to_rgb(msg)


@IMAGE_CLASSES
def test_wrong_size_is_refused_not_resized(image_cls: type) -> None:
    msg = make_image(image_cls, "rgb8", RGB)
    np.testing.assert_array_equal(image_msg_to_rgb(msg, expected_size=(3, 4)), RGB)
    with pytest.raises(ImageConversionError, match=r"3x4 \(HxW\) does not have the expected size 4x3"):
        image_msg_to_rgb(msg, expected_size=(4, 3))


def test_empty_image_is_refused() -> None:
    msg = make_image(RosbagsImage, "rgb8", RGB)
    msg.height = 0
    with pytest.raises(ImageConversionError, match="empty"):
        image_msg_to_rgb(msg)


@IMAGE_CLASSES
def test_rgb_to_image_msg_builds_rgb8_with_header(image_cls: type) -> None:
    msg = rgb_to_image_msg(RGB, image_cls, stamp=12_000_000_345, frame_id="front")
    assert isinstance(msg, image_cls)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step) == (3, 4, "rgb8", 0, 12)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "front")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_rgb_to_image_msg_accepts_time_objects_and_default_stamp() -> None:
    time = SimpleNamespace(sec=3, nanosec=4)
    assert stamp_to_ns(rgb_to_image_msg(RGB, RosbagsImage, stamp=time).header.stamp) == 3_000_000_004
    assert stamp_to_ns(rgb_to_image_msg(RGB, RclpyImage).header.stamp) == 0
    assert stamp_fields(-1) == {"sec": -1, "nanosec": 999_999_999}


@pytest.mark.parametrize("bad", [RGB.astype(np.float32), RGB[..., 0], RGB[..., :2], np.zeros((0, 2, 3), np.uint8)])
def test_rgb_to_image_msg_refuses_non_rgb_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ImageConversionError, match=r"uint8 RGB array \[H, W, 3\]"):
        rgb_to_image_msg(bad, RosbagsImage)


def test_rclpy_serialized_image_decodes_identically_in_rosbags() -> None:
    rclpy_msg = make_image(RclpyImage, "bgr8", np.ascontiguousarray(RGB[..., ::-1]), step=13)
    rosbags_msg = TYPESTORE.deserialize_cdr(serialize_message(rclpy_msg), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_msg_to_rgb(rosbags_msg), RGB)
    np.testing.assert_array_equal(image_msg_to_rgb(rclpy_msg), RGB)


class FakeCvBridge:
    """Stands in for cv_bridge.CvBridge, recording what it is asked to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def imgmsg_to_cv2(self, msg: object, desired_encoding: str) -> np.ndarray:
        self.calls.append(f"imgmsg_to_cv2:{desired_encoding}")
        return image_conversion._decode(msg, image_conversion._LAYOUTS[msg.encoding])

    def cv2_to_imgmsg(self, rgb: np.ndarray, encoding: str) -> RclpyImage:
        self.calls.append(f"cv2_to_imgmsg:{encoding}")
        h, w, _ = rgb.shape
        return RclpyImage(height=h, width=w, encoding=encoding, step=3 * w, data=rgb.tobytes())


def test_cv_bridge_is_used_for_rclpy_messages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = FakeCvBridge()
    monkeypatch.setattr(image_conversion, "_cv_bridge", lambda: bridge)
    msg = rgb_to_image_msg(RGB, RclpyImage, stamp=5, frame_id="cam")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)
    assert (msg.header.stamp.nanosec, msg.header.frame_id) == (5, "cam")
    assert bridge.calls == ["cv2_to_imgmsg:rgb8", "imgmsg_to_cv2:rgb8"]
    np.testing.assert_array_equal(image_msg_to_rgb(rgb_to_image_msg(RGB, RosbagsImage)), RGB)
    assert len(bridge.calls) == 2
    with pytest.raises(ImageConversionError, match="yuv422"):  # refused before reaching cv_bridge
        image_msg_to_rgb(make_image(RclpyImage, "yuv422", RGB))


def test_without_cv_bridge_installed_the_own_implementation_is_used() -> None:
    try:
        import cv_bridge  # noqa: F401
    except ImportError:
        assert image_conversion._cv_bridge() is None
    else:
        pytest.skip("cv_bridge is installed")
