"""Episode I/O on rosbag2 files (MCAP or sqlite3) with ``rosbags``; no rclpy needed.

Reading (:func:`read_episode`) works on any bag with standard message types given a topic mapping:
rosbag2 folders, single ``.mcap`` / ``.db3`` files (and ROS 1 ``.bag`` files, via rosbags).

Policies:

- Time of a message: ``header.stamp`` when the message has a header and the stamp is non-zero,
  otherwise the bag's log (receive) time. ``clock="log"`` uses log time for everything; use it
  for bags where header stamps and log times come from different clocks (e.g. sim time in headers
  while a header-less ``Twist`` only has wall-clock log time).
- Frames: images are taken in bag order. Frames that cannot be decoded (unsupported encoding,
  bad size, corrupt data; the first decodable frame fixes the size unless ``frame_size`` is given)
  are skipped. Of the rest, the largest set whose stamps strictly increase in bag order is kept
  (earlier-arriving frames win ties; a repeated stamp keeps its first frame) and the others are
  skipped as out of order, so one glitched stamp (backwards or far ahead) costs one frame, not the
  episode. If more than half of the image messages are skipped for any reason, the bag is
  refused with a ``BagError``; exactly half is still accepted.
- Actions: invalid messages (NaN/inf, unknown joints, zero quaternion, ...) are skipped. The rest
  are sorted by time and resampled onto the frame times with a zero-order hold. Before the first
  sample the neutral action is used for twist (zero); joints and camera poses use their first
  sample instead, as all-zero joint positions and the identity pose are real, different
  configurations. An
  action topic with no usable message is refused with a ``BagError``; one whose samples all lie
  before or after the frames gets a ``UserWarning`` (typically mixed clocks, see above). There is
  no command timeout: the last command holds until the next one.
- Every skip is counted in ``Episode.skipped`` under ``"<topic>:<reason>"`` (reasons:
  ``undecodable``, ``out_of_order``, ``invalid``) and reported once per key as a ``UserWarning``.

Writing (:class:`EpisodeWriter`, :func:`write_episode`) records ``rgb8`` images and the actions as
``Twist`` / ``JointState`` / ``PoseStamped`` with header stamp and log time both set to the sample
time, using the ROS 2 Kilted typestore.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag1 import ReaderError as Rosbag1ReaderError
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from astra_ros.action_conversion import (
    ACTION_MSG_TYPES,
    COMMAND_TOPICS,
    MODALITIES,
    ActionConversionError,
    action_dim,
    action_to_msg,
    msg_to_action,
    neutral_action,
    normalize_type_name,
)
from astra_ros.image_conversion import ImageConversionError, image_msg_to_rgb, rgb_to_image_msg, stamp_to_ns
from astra_ros.resample import zoh_resample

Storage = Literal["mcap", "sqlite3"]
Clock = Literal["header", "log"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
# The topics the world-model node subscribes to (and `astra_ros.datagen` records).
DEFAULT_ACTION_TOPICS: dict[str, str] = {modality: f"/{topic}" for modality, topic in COMMAND_TOPICS.items()}
# Message type written per modality (reading also accepts the others in ACTION_MSG_TYPES).
WRITE_MSG_TYPES: dict[str, str] = {
    "twist": "geometry_msgs/msg/Twist",
    "joints": "sensor_msgs/msg/JointState",
    "camera_pose": "geometry_msgs/msg/PoseStamped",
}
_STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_BAG_READ_ERRORS = (AnyReaderError, ReaderError, Rosbag1ReaderError, OSError)


class BagError(ValueError):
    """A bag cannot be read or written as an episode; the message names the bag and topic."""


@dataclass
class Episode:
    """One recorded episode, actions aligned to frames.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB frames.
        frame_times_ns: int64 ``[T]`` strictly increasing frame times (ns, see module policies).
        actions: modality -> float32 ``[T, D]`` action in effect at each frame time.
        skipped: ``"<topic>:<reason>"`` -> number of messages skipped; only non-zero counts.
        source: path of the bag read.
    """

    frames: np.ndarray
    frame_times_ns: np.ndarray
    actions: dict[str, np.ndarray]
    skipped: dict[str, int]
    source: str


@dataclass
class _TopicSamples:
    """Decoded messages of one topic in bag order, plus what was rejected and why."""

    topic: str
    times: list[int] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    total: int = 0
    rejected: int = 0
    first_error: str = ""

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.first_error = self.first_error or reason


def read_episode(
    bag_path: str | Path,
    image_topic: str,
    action_topics: Mapping[str, str],
    joint_names: Sequence[str] | None = None,
    frame_size: tuple[int, int] | None = None,
    *,
    clock: Clock = "header",
) -> Episode:
    """Read frames and frame-aligned actions from a bag (policies: see the module docstring).

    Args:
        bag_path: rosbag2 folder, or a single ``.mcap`` / ``.db3`` file.
        image_topic: ``sensor_msgs/msg/Image`` topic.
        action_topics: modality (``twist``, ``joints``, ``camera_pose``) -> topic; may be empty.
        joint_names: joint order of the ``joints`` action; required when that modality is read.
        frame_size: ``(height, width)`` every frame must have; None: that of the first frame.
        clock: ``"header"`` (header stamp, else log time) or ``"log"`` (log time only).

    Raises:
        BagError: unreadable bag, missing or mistyped topic, no usable frames or actions, or
            more than half of the image messages unusable.
        ValueError: invalid arguments.
    """
    path = Path(bag_path)
    _check_read_request(image_topic, action_topics, joint_names, clock)
    decoders = {image_topic: _frame_decoder(frame_size)}
    for modality, topic in action_topics.items():
        decoders[topic] = _action_decoder(modality, joint_names)
    expected_types = {image_topic: (IMAGE_TYPE,)} | {
        topic: ACTION_MSG_TYPES[modality] for modality, topic in action_topics.items()
    }
    samples = _read_topics(path, expected_types, decoders, clock)
    skips: dict[str, tuple[int, str]] = {}
    frames, frame_times = _select_frames(path, samples[image_topic], skips)
    actions = {}
    for modality, topic in action_topics.items():
        actions[modality] = _align_actions(path, modality, samples[topic], frame_times, joint_names, skips)
    for key, (count, example) in skips.items():
        warnings.warn(f"{path}: skipped {count} message(s) on {key}; first: {example}", stacklevel=2)
    skipped = {key: count for key, (count, _) in skips.items()}
    return Episode(frames, frame_times, actions, skipped, str(path))


class EpisodeWriter:
    """Records an episode into a new rosbag2 folder; use as a context manager.

    Example::

        with EpisodeWriter(out, action_topics={"twist": "/cmd_vel"}) as writer:
            writer.write_action("twist", t_ns, [0.5, 0, 0, 0, 0, 0.1])
            writer.write_frame(t_ns, rgb)

    If the ``with`` block raises, the bag is aborted (rosbags semantics): the folder is left
    without ``metadata.yaml`` and is not a readable episode.

    Args:
        path: folder to create; must not exist.
        storage: ``"mcap"`` or ``"sqlite3"``.
        image_topic: topic of the ``rgb8`` ``sensor_msgs/msg/Image`` frames.
        action_topics: modality -> topic for each modality that will be written.
        joint_names: joint order of ``joints`` action vectors; required for that modality.
        frame_id: header frame id of the images.
        world_frame_id: header frame id of ``camera_pose`` messages.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        action_topics: Mapping[str, str],
        storage: Storage = "mcap",
        image_topic: str = DEFAULT_IMAGE_TOPIC,
        joint_names: Sequence[str] | None = None,
        frame_id: str = "camera",
        world_frame_id: str = "world",
    ) -> None:
        if storage not in _STORAGE_PLUGINS:
            raise ValueError(f"storage must be one of {sorted(_STORAGE_PLUGINS)}, got {storage!r}")
        _check_topics(image_topic, action_topics, joint_names)
        self._path = Path(path)
        self._storage = storage
        self._topics = {"image": image_topic, **action_topics}
        self._joint_names = list(joint_names) if joint_names else None
        self._frame_ids = {"image": frame_id, "camera_pose": world_frame_id}
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._last_frame_ns: int | None = None
        self._frame_size: tuple[int, int] | None = None

    def open(self) -> None:
        """Create the bag folder and register the topics."""
        try:
            writer = Writer(self._path, version=9, storage_plugin=_STORAGE_PLUGINS[self._storage])
            writer.open()
        except WriterError as err:
            raise BagError(f"cannot create bag {self._path}: {err}") from err
        for key, topic in self._topics.items():
            msgtype = IMAGE_TYPE if key == "image" else WRITE_MSG_TYPES[key]
            self._connections[key] = writer.add_connection(topic, msgtype, typestore=self._typestore)
        self._writer = writer

    def close(self) -> None:
        """Finish the bag (writes its index and ``metadata.yaml``)."""
        self._require_open().close()
        self._writer = None

    def __enter__(self) -> EpisodeWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._require_open().abort()
            self._writer = None

    def write_frame(self, t_ns: int, rgb: np.ndarray) -> None:
        """Write a uint8 ``[H, W, 3]`` frame at ``t_ns``; times must strictly increase, sizes match."""
        if self._last_frame_ns is not None and t_ns <= self._last_frame_ns:
            raise BagError(
                f"{self._path}: frame at {t_ns} ns is not after the previous one at {self._last_frame_ns} ns"
            )
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        if self._frame_size is not None and size != self._frame_size:
            raise BagError(f"{self._path}: frame size {size} differs from the first one's {self._frame_size}")
        image_type = self._msg_class(IMAGE_TYPE)
        msg = rgb_to_image_msg(rgb, image_type, stamp=t_ns, frame_id=self._frame_ids["image"])
        self._write("image", t_ns, msg)
        self._last_frame_ns, self._frame_size = t_ns, size

    def write_action(self, modality: str, t_ns: int, vector: ArrayLike) -> None:
        """Write an action ``[D]`` at ``t_ns`` as the modality's message (header stamp = log time = t_ns).

        Raises:
            BagError: the modality has no topic in this writer.
            ActionConversionError: wrong shape or non-finite values.
        """
        if modality not in self._connections or modality == "image":
            raise BagError(f"{self._path}: no topic configured for action modality {modality!r}")
        msg = action_to_msg(
            modality,
            vector,
            self._msg_class(WRITE_MSG_TYPES[modality]),
            stamp=t_ns,
            frame_id=self._frame_ids.get(modality, ""),
            joint_names=self._joint_names,
        )
        self._write(modality, t_ns, msg)

    def _msg_class(self, msgtype: str) -> type:
        return self._typestore.types[msgtype]

    def _write(self, key: str, t_ns: int, msg: Any) -> None:
        connection = self._connections[key]
        data = self._typestore.serialize_cdr(msg, connection.msgtype)
        self._require_open().write(connection, int(t_ns), data)

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise BagError(f"bag {self._path} is not open")
        return self._writer


def write_episode(
    path: str | Path,
    frames: np.ndarray,
    frame_times_ns: ArrayLike,
    actions: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    *,
    storage: Storage = "mcap",
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    action_topics: Mapping[str, str] | None = None,
    joint_names: Sequence[str] | None = None,
    frame_id: str = "camera",
) -> Path:
    """Write a whole episode with :class:`EpisodeWriter`, messages in time order.

    Args:
        path: folder to create.
        frames: uint8 ``[T, H, W, 3]``.
        frame_times_ns: int ``[T]`` strictly increasing.
        actions: modality -> (times_ns ``[N]``, values ``[N, D]``); actions are written at their
            own times, not at frame times.
        action_topics: modality -> topic; None: :data:`DEFAULT_ACTION_TOPICS` for the given modalities.

    Returns:
        ``Path(path)``.
    """
    actions = actions or {}
    times = np.asarray(frame_times_ns, dtype=np.int64)
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} frame times")
    topics = action_topics or {modality: DEFAULT_ACTION_TOPICS.get(modality, "") for modality in actions}
    events: list[tuple[int, str, Any]] = [(int(t), "image", im) for t, im in zip(times, frames, strict=True)]
    for modality, (action_times, values) in actions.items():
        pairs = zip(action_times, np.asarray(values), strict=True)
        events += [(int(t), modality, value) for t, value in pairs]
    events.sort(key=lambda event: event[0])  # stable: frames stay in order among equal times
    with EpisodeWriter(
        path,
        storage=storage,
        image_topic=image_topic,
        action_topics=topics,
        joint_names=joint_names,
        frame_id=frame_id,
    ) as writer:
        for t_ns, key, payload in events:
            if key == "image":
                writer.write_frame(t_ns, payload)
            else:
                writer.write_action(key, t_ns, payload)
    return Path(path)


def _check_read_request(
    image_topic: str, action_topics: Mapping[str, str], joint_names: Sequence[str] | None, clock: str
) -> None:
    if clock not in ("header", "log"):
        raise ValueError(f"clock must be 'header' or 'log', got {clock!r}")
    _check_topics(image_topic, action_topics, joint_names)


def _check_topics(image_topic: str, action_topics: Mapping[str, str], joint_names: Sequence[str] | None) -> None:
    unknown = [modality for modality in action_topics if modality not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown action modalities {unknown} (known: {', '.join(MODALITIES)})")
    topics = [image_topic, *action_topics.values()]
    if len(set(topics)) != len(topics) or not all(topics):
        raise ValueError(
            f"topics must be non-empty and distinct, got image {image_topic!r}, actions {dict(action_topics)}"
        )
    if "joints" in action_topics:
        action_dim("joints", joint_names)  # raises on missing or duplicate joint names


def _frame_decoder(frame_size: tuple[int, int] | None) -> Callable[[Any], np.ndarray]:
    size = tuple(frame_size) if frame_size is not None else None

    def decode(msg: Any) -> np.ndarray:
        nonlocal size
        rgb = image_msg_to_rgb(msg, size)
        size = size or rgb.shape[:2]
        return rgb

    return decode


def _action_decoder(modality: str, joint_names: Sequence[str] | None) -> Callable[[Any], np.ndarray]:
    return lambda msg: msg_to_action(modality, msg, joint_names)


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """An open ``AnyReader`` on a bag folder or file; failures become a ``BagError`` naming the bag."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            yield reader
    except _BAG_READ_ERRORS as err:
        raise BagError(f"cannot read bag {path}: {err}") from err


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> message type of every topic in a bag."""
    with open_bag(path) as reader:
        return {topic: str(info.msgtype) for topic, info in sorted(reader.topics.items())}


def _read_topics(
    path: Path,
    expected_types: Mapping[str, Sequence[str]],
    decoders: Mapping[str, Callable[[Any], np.ndarray]],
    clock: Clock,
) -> dict[str, _TopicSamples]:
    """One pass over the bag, decoding each requested topic's messages in bag (log-time) order."""
    samples = {topic: _TopicSamples(topic) for topic in expected_types}
    with open_bag(path) as reader:
        connections = _topic_connections(reader, path, expected_types)
        for connection, log_ns, raw in reader.messages(connections=connections):
            topic_samples = samples[connection.topic]
            topic_samples.total += 1
            try:
                msg = reader.deserialize(raw, connection.msgtype)
                value = decoders[connection.topic](msg)
            except (AnyReaderError, ImageConversionError, ActionConversionError) as err:
                topic_samples.reject(str(err))
                continue
            topic_samples.times.append(_message_time_ns(msg, log_ns, clock))
            topic_samples.values.append(value)
    return samples


def _topic_connections(reader: AnyReader, path: Path, expected_types: Mapping[str, Sequence[str]]) -> list[Connection]:
    available = reader.topics
    connections: list[Connection] = []
    for topic, expected in expected_types.items():
        if topic not in available:
            listing = ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(available.items()))
            raise BagError(f"bag {path}: topic {topic!r} not found; available topics: {listing or 'none'}")
        found = {normalize_type_name(conn.msgtype) for conn in available[topic].connections}
        if not found <= set(expected):
            raise BagError(
                f"bag {path}: topic {topic!r} has type {', '.join(sorted(found))}, expected {' or '.join(expected)}"
            )
        connections += available[topic].connections
    return connections


def _message_time_ns(msg: Any, log_ns: int, clock: Clock) -> int:
    header = getattr(msg, "header", None)
    if clock == "header" and header is not None:
        stamp_ns = stamp_to_ns(header.stamp)
        if stamp_ns != 0:
            return stamp_ns
    return int(log_ns)


def _select_frames(
    path: Path, images: _TopicSamples, skips: dict[str, tuple[int, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Frames forming the longest run of increasing stamps: uint8 ``[T, H, W, 3]``, int64 ``[T]``."""
    if images.total == 0:
        raise BagError(f"bag {path}: image topic {images.topic!r} has no messages")
    keep = _longest_increasing(images.times)
    out_of_order = len(images.times) - len(keep)
    _record_skip(skips, images.topic, "undecodable", images.rejected, images.first_error)
    _record_skip(skips, images.topic, "out_of_order", out_of_order, _first_out_of_order(images.times))
    if 2 * (images.rejected + out_of_order) > images.total:
        raise BagError(
            f"bag {path}: image topic {images.topic!r}: only {len(keep)} of {images.total} frames are "
            f"usable ({images.rejected} undecodable, first: {images.first_error or '-'}; "
            f"{out_of_order} out of order, first: {_first_out_of_order(images.times) or '-'})"
        )
    frames = np.stack([images.values[i] for i in keep])
    return frames, np.array([images.times[i] for i in keep], dtype=np.int64)


def _longest_increasing(times: Sequence[int]) -> list[int]:
    """Indices of a longest strictly increasing subsequence of ``times``, O(n log n).

    Among equally long ones, the earliest-arriving frames win, so a frame stamped backwards is the
    one dropped, not its predecessor.
    """
    # run_from[i]: length of the longest increasing run starting at i, found scanning backwards
    # (an increasing run read backwards is a decreasing one: patience sorting on negated stamps).
    run_from = [0] * len(times)
    heads: list[int] = []  # heads[k]: -(largest first stamp of a run of length k+1 seen so far)
    for i in range(len(times) - 1, -1, -1):
        k = bisect_left(heads, -times[i])
        heads[k : k + 1] = [-times[i]]
        run_from[i] = k + 1
    keep: list[int] = []
    need = max(run_from, default=0)
    for i, t in enumerate(times):
        if need and run_from[i] == need and (not keep or t > times[keep[-1]]):
            keep.append(i)
            need -= 1
    return keep


def _first_out_of_order(times: Sequence[int]) -> str:
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            return f"decoded frame {i} stamped {times[i]} ns is not after frame {i - 1} stamped {times[i - 1]} ns"
    return ""


def _align_actions(
    path: Path,
    modality: str,
    actions: _TopicSamples,
    frame_times: np.ndarray,
    joint_names: Sequence[str] | None,
    skips: dict[str, tuple[int, str]],
) -> np.ndarray:
    """Zero-order hold of one action topic onto the frame times: float32 ``[T, D]``."""
    _record_skip(skips, actions.topic, "invalid", actions.rejected, actions.first_error)
    if not actions.values:
        raise BagError(
            f"bag {path}: action topic {actions.topic!r} ({modality}) has no usable messages "
            f"({actions.total} messages; first error: {actions.first_error or '-'})"
        )
    order = np.argsort(np.asarray(actions.times, dtype=np.int64), kind="stable")
    times = np.asarray(actions.times, dtype=np.int64)[order]
    values = np.stack(actions.values)[order]
    if times[0] > frame_times[-1] or times[-1] < frame_times[0]:
        warnings.warn(
            f"bag {path}: action topic {actions.topic!r} spans [{times[0]}, {times[-1]}] ns, disjoint "
            f"from the frames' [{frame_times[0]}, {frame_times[-1]}] ns; if header stamps and log times "
            "use different clocks, read with clock='log'",
            stacklevel=3,
        )
    dim = action_dim(modality, joint_names)
    neutral = values[0] if modality in ("joints", "camera_pose") else neutral_action(modality, dim)
    return zoh_resample(times, values, frame_times, neutral)


def _record_skip(skips: dict[str, tuple[int, str]], topic: str, reason: str, count: int, example: str) -> None:
    if count:
        skips[f"{topic}:{reason}"] = (count, example)
