"""``astra-bag-play``: a bag written here is published into an in-process rclpy graph and received back."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Twist
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import Image
from std_msgs.msg import String

from astra_ros import bag_play
from astra_ros.bag_play import BagPlayer, PlayError, message_class

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
PREFIX = f"/astra_play_test_{os.getpid()}"  # parallel test runs on this machine must not cross-talk
CHATTER, CAMERA, CMD, CUSTOM = (f"{PREFIX}/{name}" for name in ("chatter", "camera", "cmd_vel", "custom"))
SPAN_S = 2.0  # recorded duration of the bag
RATE = 8.0
T0 = 1_700_000_000_000_000_000


def chatter_data(i: int) -> str:
    return f"hello {i}"


def write_bag(path: Path, storage: str = "mcap", *, custom_topic: bool = False) -> Path:
    """Chatter every 0.2 s, an image every 0.5 s, one twist; optionally a type no Python package provides."""
    store = get_typestore(Stores.ROS2_KILTED)
    if custom_topic:
        store.register(get_types_from_msg("int32 value", "astra_test_only/msg/Custom"))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        chatter = writer.add_connection(CHATTER, "std_msgs/msg/String", typestore=store)
        camera = writer.add_connection(CAMERA, "sensor_msgs/msg/Image", typestore=store)
        cmd = writer.add_connection(CMD, "geometry_msgs/msg/Twist", typestore=store)
        for i in range(11):
            msg = T["std_msgs/msg/String"](data=chatter_data(i))
            writer.write(chatter, T0 + i * 200_000_000, store.serialize_cdr(msg, "std_msgs/msg/String"))
        for i in range(5):
            writer.write(camera, T0 + i * 500_000_000 + 1, store.serialize_cdr(image(i), "sensor_msgs/msg/Image"))
        vec = T["geometry_msgs/msg/Vector3"]
        twist = T["geometry_msgs/msg/Twist"](linear=vec(0.5, 0.0, 0.0), angular=vec(0.0, 0.0, -0.25))
        writer.write(cmd, T0 + 700_000_000, store.serialize_cdr(twist, "geometry_msgs/msg/Twist"))
        if custom_topic:
            custom = writer.add_connection(CUSTOM, "astra_test_only/msg/Custom", typestore=store)
            msg = store.types["astra_test_only/msg/Custom"](value=7)
            writer.write(custom, T0 + 100_000_000, store.serialize_cdr(msg, "astra_test_only/msg/Custom"))
    return path


def image(i: int) -> object:
    stamp = T["builtin_interfaces/msg/Time"](sec=i, nanosec=0)
    header = T["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")
    return T["sensor_msgs/msg/Image"](header, 2, 3, "rgb8", 0, 9, np.full(18, i, np.uint8))


@dataclass
class Graph:
    """An isolated rclpy context with a player node and a listener node spun in the background."""

    context: Context
    player_node: Node
    listener: Node
    received: dict[str, list] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    def listen(self, topic: str, msg_type: type) -> None:
        self.received[topic], self.times[topic] = [], []

        def callback(msg: object) -> None:
            self.received[topic].append(msg)
            self.times[topic].append(time.monotonic())

        self.listener.create_subscription(msg_type, topic, callback, QoSProfile(depth=100))

    def wait_for(self, condition, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    def count(self) -> int:
        return sum(len(v) for v in self.received.values())


@pytest.fixture()
def graph() -> Iterator[Graph]:
    context = Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200), signal_handler_options=SignalHandlerOptions.NO)
    player_node = rclpy.create_node("player", context=context)
    listener = rclpy.create_node("listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield Graph(context, player_node, listener)
    # The spin thread ends before the nodes go, so no callback runs on a destroyed node.
    executor.shutdown()
    spinner.join(timeout=5)
    player_node.destroy_node()
    listener.destroy_node()
    rclpy.shutdown(context=context)


def connect(graph: Graph, player: BagPlayer) -> None:
    assert graph.wait_for(lambda: all(p.get_subscription_count() > 0 for p in player.publishers.values()))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_all_messages_arrive_in_order_at_the_rate_factor(graph: Graph, tmp_path: Path, storage: str) -> None:
    player = BagPlayer(graph.player_node, write_bag(tmp_path / "bag", storage), rate=RATE)
    for topic, msg_type in ((CHATTER, String), (CAMERA, Image), (CMD, Twist)):
        graph.listen(topic, msg_type)
    connect(graph, player)

    start = time.monotonic()
    assert player.play() == 17
    played_s = time.monotonic() - start
    assert graph.wait_for(lambda: graph.count() == 17)

    assert [m.data for m in graph.received[CHATTER]] == [chatter_data(i) for i in range(11)]
    assert [m.header.stamp.sec for m in graph.received[CAMERA]] == list(range(5))
    assert bytes(graph.received[CAMERA][3].data) == bytes([3] * 18)
    twist = graph.received[CMD][0]
    assert (twist.linear.x, twist.angular.z) == (0.5, -0.25)
    # Recorded span 2 s at rate 8: 0.25 s. Never faster; slower only by scheduling overhead (rate 1 would be 2 s).
    expected_s = SPAN_S / RATE
    assert expected_s - 0.01 <= played_s <= expected_s + 1.25
    assert graph.times[CHATTER][-1] - start >= expected_s - 0.01
    # The chatter stream keeps its shape: its second half arrives after half the playback time.
    assert graph.times[CHATTER][6] - start >= 0.6 * expected_s - 0.01


def test_topics_filter_and_errors(graph: Graph, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag")
    player = BagPlayer(graph.player_node, bag, topics=[CMD], rate=100.0)
    assert list(player.publishers) == [CMD]
    graph.listen(CMD, Twist)
    graph.listen(CHATTER, String)
    connect(graph, player)
    assert player.play() == 1
    assert graph.wait_for(lambda: len(graph.received[CMD]) == 1)
    assert graph.received[CHATTER] == []

    with pytest.raises(PlayError, match="'/nope' not found"):
        BagPlayer(graph.player_node, bag, topics=["/nope"])
    with pytest.raises(PlayError, match="rate must be > 0"):
        BagPlayer(graph.player_node, bag, rate=0.0)
    with pytest.raises(PlayError, match="does not exist"):
        BagPlayer(graph.player_node, tmp_path / "missing")


def test_topic_of_an_unavailable_type_is_skipped_with_a_warning(graph: Graph, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="custom: not played"):
        player = BagPlayer(graph.player_node, write_bag(tmp_path / "bag", custom_topic=True), rate=100.0)
    assert set(player.publishers) == {CHATTER, CAMERA, CMD}


def test_loop_until_stopped(graph: Graph, tmp_path: Path) -> None:
    player = BagPlayer(graph.player_node, write_bag(tmp_path / "bag"), topics=[CHATTER], rate=50.0)
    graph.listen(CHATTER, String)
    connect(graph, player)
    worker = threading.Thread(target=player.play, kwargs={"loop": True})
    worker.start()
    assert graph.wait_for(lambda: len(graph.received[CHATTER]) >= 25)
    player.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    data = [m.data for m in graph.received[CHATTER]]
    assert data[:22] == [chatter_data(i) for i in range(11)] * 2


def test_message_class_from_type_name() -> None:
    assert message_class("std_msgs/msg/String") is String
    assert message_class("sensor_msgs/Image") is Image
    with pytest.raises(PlayError, match="not available"):
        message_class("astra_test_only/msg/Custom")
    with pytest.raises(PlayError, match="not available"):
        message_class("std_msgs/msg/NoSuchType")


def test_main_plays_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    bag = write_bag(tmp_path / "bag")
    assert bag_play.main([str(bag), "--rate", "20", "--delay", "0", "--topics", CHATTER, CMD]) == 0
    assert "published 12 messages on 2 topic(s)" in capsys.readouterr().out
    assert bag_play.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
