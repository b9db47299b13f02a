"""Bag output of an evaluation: the recording, unchanged, plus the predicted frames next to it.

Every message of the source bag is copied as raw bytes on a connection with the source's message
type, definition, hash, serialization format and offered QoS, so the copy opens in Foxglove or RViz
like the original. The predicted frames go on :data:`PREDICTED_TOPIC` as ``rgb8``
``sensor_msgs/msg/Image``, each with the header stamp, frame id and log time of the recorded image it
predicts, so both play side by side on the same timeline. Rollouts that overlap each contribute
their frames, so a stamp can then appear more than once on that topic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from astra_ros.bags import IMAGE_TYPE, BagError, Clock, open_bag
from astra_ros.image_conversion import rgb_to_image_msg, stamp_to_ns

PREDICTED_TOPIC = "/astra/predicted/image"


def export_bag(
    source: str | Path,
    out: str | Path,
    image_topic: str,
    predicted: Sequence[tuple[int, np.ndarray]],
    *,
    clock: Clock = "header",
) -> int:
    """Write a new MCAP rosbag2 with all of ``source``'s messages and the predicted frames.

    Args:
        source: rosbag2 bag the frames were read from (ROS 1 bags are refused).
        out: folder to create; must not exist.
        image_topic: recorded image topic; gives the predicted frames their frame id and log times.
        predicted: ``(t_ns, rgb)`` pairs: the time of the recorded frame predicted (as read with
            ``clock``, see :func:`astra_ros.bags.read_episode`) and uint8 ``[H, W, 3]`` pixels.
        clock: the clock the frame times were read with.

    Returns:
        Number of messages written.

    Raises:
        BagError: unreadable source, ROS 1 source, or ``out`` cannot be created.
    """
    with open_bag(source) as reader:
        if not reader.is2:
            raise BagError(f"bag {source}: ROS 1 bags cannot be copied into a rosbag2 bag")
        frame_id, stamps = _recorded_frame_stamps(reader, image_topic, clock)
        try:
            with Writer(Path(out), version=9, storage_plugin=StoragePlugin.MCAP) as writer:
                return _copy_with_predictions(reader, writer, predicted, stamps, frame_id)
        except WriterError as err:
            raise BagError(f"cannot write bag {out}: {err}") from err


def _recorded_frame_stamps(reader: AnyReader, image_topic: str, clock: Clock) -> tuple[str, dict[int, tuple[int, int]]]:
    """Frame id of the recorded images, and frame time (as read with ``clock``) -> (header stamp, log time)."""
    connections = [c for c in reader.connections if c.topic == image_topic]
    stamps: dict[int, tuple[int, int]] = {}
    frame_id = ""
    for connection, log_ns, raw in reader.messages(connections=connections):
        try:
            header = reader.deserialize(raw, connection.msgtype).header
        except AnyReaderError:
            continue  # read_episode skipped this frame too, so nothing was predicted for it
        stamp_ns = stamp_to_ns(header.stamp)
        frame_ns = log_ns if clock == "log" or stamp_ns == 0 else stamp_ns
        stamps.setdefault(frame_ns, (stamp_ns or log_ns, log_ns))
        frame_id = frame_id or str(header.frame_id)
    return frame_id, stamps


def _copy_with_predictions(
    reader: AnyReader,
    writer: Writer,
    predicted: Sequence[tuple[int, np.ndarray]],
    stamps: dict[int, tuple[int, int]],
    frame_id: str,
) -> int:
    """Write the source messages and the predictions merged in log-time order; returns the count."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    sources, targets = _copy_connections(reader, writer)
    predicted_connection = writer.add_connection(PREDICTED_TOPIC, IMAGE_TYPE, typestore=typestore)
    image_class = typestore.types[IMAGE_TYPE]

    def predictions() -> Iterator[tuple[int, Connection, Any]]:
        timed = [(*stamps.get(frame_ns, (frame_ns, frame_ns)), rgb) for frame_ns, rgb in predicted]
        for stamp_ns, log_ns, rgb in sorted(timed, key=lambda item: item[1]):  # merge needs log-time order
            yield log_ns, predicted_connection, (stamp_ns, rgb)

    def recorded() -> Iterator[tuple[int, Connection, Any]]:
        for connection, log_ns, raw in reader.messages(connections=sources):
            yield log_ns, targets[_connection_key(connection)], raw

    count = 0
    for log_ns, connection, payload in heapq.merge(recorded(), predictions(), key=lambda item: item[0]):
        if connection is predicted_connection:
            msg = rgb_to_image_msg(payload[1], image_class, stamp=payload[0], frame_id=frame_id)
            payload = typestore.serialize_cdr(msg, IMAGE_TYPE)
        writer.write(connection, log_ns, payload)
        count += 1
    return count


def _copy_connections(reader: AnyReader, writer: Writer) -> tuple[list[Connection], dict[tuple[int, int], Connection]]:
    """Source connections to copy, and :func:`_connection_key` -> new connection with the same topic,
    type, definition and QoS.

    Source connections on :data:`PREDICTED_TOPIC` (a bag written by an earlier evaluation) are left
    out: this evaluation's predictions replace them.
    """
    kilted = get_typestore(Stores.ROS2_KILTED)
    sources: list[Connection] = []
    targets: dict[tuple[int, int], Connection] = {}
    by_key: dict[tuple[str, str, str, str], Connection] = {}
    for connection in reader.connections:
        if connection.topic == PREDICTED_TOPIC:
            continue
        ext = connection.ext
        qos = list(getattr(ext, "offered_qos_profiles", []))
        serialization = getattr(ext, "serialization_format", "cdr")
        # Several source files may carry the same connection; the writer refuses duplicates.
        key = (connection.topic, connection.msgtype, serialization, repr(qos))
        if key not in by_key:
            # Only consulted when the source lacks a definition or hash (bags from older rosbag2).
            known = connection.msgtype in reader.typestore.fielddefs
            by_key[key] = writer.add_connection(
                connection.topic,
                connection.msgtype,
                typestore=reader.typestore if known else kilted,
                msgdef=connection.msgdef.data or None,
                rihs01=connection.digest or None,
                serialization_format=serialization,
                offered_qos_profiles=qos,
            )
        sources.append(connection)
        targets[_connection_key(connection)] = by_key[key]
    return sources, targets


def _connection_key(connection: Connection) -> tuple[int, int]:
    # Connection tuples hold lists (QoS), so they cannot be dict keys; ids are unique per source file.
    return id(connection.owner), connection.id
