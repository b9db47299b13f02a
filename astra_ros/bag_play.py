"""``astra-bag-play``: publish a bag into a live ROS 2 graph with its recorded timing.

    astra-bag-play BAG [--rate 1.0] [--topics /a /b ...] [--loop] [--delay 0.5]

A stand-in for ``ros2 bag play`` where rosbag2 is not installed: the bag is read with ``rosbags``
(rosbag2 folders, ``.mcap`` and ``.db3`` files) and every message is published as its recorded CDR
bytes (rclpy's ``Publisher.publish`` takes serialized ``bytes`` and hands them to ``publish_raw``),
so nothing is deserialized and any message type whose Python package is installed can be played.
A message recorded ``dt`` after the first one is published ``dt / rate`` after playback starts.

Publishers offer the recorded QoS where the recording agrees on it (transient-local latching of
e.g. ``/tf_static``, best-effort sensor streams), otherwise reliable, volatile, depth 100. Topics
whose message package is not installed are skipped with a warning. Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import Connection, QosDurability, QosReliability

from astra_ros.action_conversion import normalize_type_name
from astra_ros.bags import BagError, open_bag

DEFAULT_DEPTH = 100
_NS_PER_S = 1e9


class PlayError(ValueError):
    """A bag cannot be played as asked; the message names the bag, topic or type."""


def message_class(type_name: str) -> type:
    """The rclpy message class of ``"pkg/msg/Name"`` (or ``"pkg/Name"``).

    Raises:
        PlayError: the type is malformed or its Python package is not installed.
    """
    normalized = normalize_type_name(type_name)
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = _import_message
    try:
        return get_message(normalized)
    except (ImportError, AttributeError, ValueError) as err:
        raise PlayError(f"message type {type_name!r} is not available in Python ({err})") from err


def _import_message(type_name: str) -> type:
    package, kind, name = type_name.split("/")  # ValueError for a malformed name, reported by the caller
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class BagPlayer:
    """Publishes a bag's messages on a node with their recorded relative timing.

    Args:
        node: node that owns the publishers.
        bag: rosbag2 folder or ``.mcap`` / ``.db3`` file.
        topics: topics to play; None plays every topic whose message type is importable.
        rate: playback speed factor (2 plays twice as fast).

    Attributes:
        publishers: topic -> publisher, created at construction so subscribers can match before play.
        published: messages published so far, over all :meth:`play` calls.
    """

    def __init__(self, node: Node, bag: str | Path, *, topics: Sequence[str] | None = None, rate: float = 1.0) -> None:
        if not rate > 0:
            raise PlayError(f"rate must be > 0, got {rate}")
        self.bag = Path(bag)
        self.rate = float(rate)
        self._stop = threading.Event()
        self.published = 0
        connections = self._select(_bag_connections(self.bag), topics)
        self.publishers: dict[str, Publisher] = {}
        for topic, conns in connections.items():
            self._add_publisher(node, topic, conns)
        if not self.publishers:
            raise PlayError(f"bag {self.bag}: none of the selected topics has an importable message type")

    def play(self, *, loop: bool = False) -> int:
        """Publish the bag (again and again with ``loop``) until done or :meth:`stop`; returns the count."""
        before = self.published
        while not self._stop.is_set():
            self._play_once()
            if not loop:
                break
        return self.published - before

    def stop(self) -> None:
        """Make :meth:`play` return after at most the message it is waiting for; safe from any thread."""
        self._stop.set()

    def _play_once(self) -> None:
        start = time.monotonic()
        first_ns: int | None = None
        with open_bag(self.bag) as reader:
            connections = [c for c in reader.connections if c.topic in self.publishers]
            for connection, log_ns, raw in reader.messages(connections=connections):
                first_ns = log_ns if first_ns is None else first_ns
                due = start + (log_ns - first_ns) / _NS_PER_S / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                self.publishers[connection.topic].publish(bytes(raw))
                self.published += 1

    def _select(self, connections: dict[str, list[Connection]], topics: Sequence[str] | None) -> dict[str, list]:
        if topics is None:
            return connections
        unknown = [topic for topic in topics if topic not in connections]
        if unknown:
            raise PlayError(f"bag {self.bag}: topic {unknown[0]!r} not found; topics: {', '.join(connections)}")
        return {topic: connections[topic] for topic in topics}

    def _add_publisher(self, node: Node, topic: str, connections: list[Connection]) -> None:
        types = sorted({c.msgtype for c in connections})
        if len(types) > 1:
            warnings.warn(f"{topic}: recorded with several types {types}; playing only {types[0]}", stacklevel=3)
            connections = [c for c in connections if c.msgtype == types[0]]
        try:
            msg_type = message_class(types[0])
        except PlayError as err:
            warnings.warn(f"{topic}: not played: {err}", stacklevel=3)
            return
        self.publishers[topic] = node.create_publisher(msg_type, topic, publisher_qos(connections))


def _bag_connections(bag: Path) -> dict[str, list[Connection]]:
    """Topic -> its connections in a ROS 2 bag."""
    try:
        with open_bag(bag) as reader:
            if not reader.is2:
                raise PlayError(f"bag {bag}: ROS 1 bags cannot be played into ROS 2")
            connections: dict[str, list[Connection]] = {}
            for connection in reader.connections:
                connections.setdefault(connection.topic, []).append(connection)
            return connections
    except BagError as err:
        raise PlayError(str(err)) from err


def publisher_qos(connections: Sequence[Connection]) -> QoSProfile:
    """Reliable, volatile, depth 100, except where every recorded publisher offered otherwise."""
    profiles = [qos for c in connections for qos in getattr(c.ext, "offered_qos_profiles", [])]
    qos = QoSProfile(depth=DEFAULT_DEPTH)
    if profiles and all(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles):
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    if profiles and all(p.reliability == QosReliability.BEST_EFFORT for p in profiles):
        qos.reliability = ReliabilityPolicy.BEST_EFFORT
    return qos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astra-bag-play", description="Publish a bag's messages with their recorded timing (raw CDR via rclpy)."
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap / .db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics")
    parser.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    parser.add_argument(
        "--delay",
        type=float,
        default=0.5,
        help="seconds to wait after creating the publishers, so subscribers discover them before the first message",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for a bag or topic problem, 130 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    # Own context: callable in a process that already runs rclpy. Python's own SIGINT handling: Ctrl-C
    # raises KeyboardInterrupt here instead of rclpy invalidating the context under the publishers.
    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("astra_bag_play", context=context)
    try:
        player = BagPlayer(node, args.bag, topics=args.topics, rate=args.rate)
    except PlayError as err:
        print(f"astra-bag-play: error: {err}", file=sys.stderr)
        _shutdown(node)
        return 2
    status, started = 0, time.monotonic()
    try:
        time.sleep(max(0.0, args.delay))
        player.play(loop=args.loop)
    except KeyboardInterrupt:
        status = 130
    finally:
        _shutdown(node)
    elapsed = time.monotonic() - started
    print(
        f"astra-bag-play: published {player.published} messages on {len(player.publishers)} topic(s) in {elapsed:.2f} s"
    )
    return status


def _shutdown(node: Node) -> None:
    node.destroy_node()
    rclpy.try_shutdown(context=node.context)


if __name__ == "__main__":
    sys.exit(main())
