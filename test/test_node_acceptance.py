"""The world-model node driven as a user drives it: the shipped demo model in a process of its own, and
this process as its client, publishing each world's commands at a steady 10 Hz.

Every world must stream after `~/reset`; a command for another world, a future stamp, a burst and
`~/imagine` must leave the stream running; SIGINT during `~/imagine` must answer the caller and exit
quietly. Rates are the benchmark's business (`bench/node_latency.py`): here a stream "runs" when
frames keep arriving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
from astra_msgs.msg import ActionCandidate, ActionSequence, RolloutStatus
from astra_msgs.srv import Imagine, Reset
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from astra_ros import demo_model_path
from astra_ros.action_conversion import COMMAND_TOPICS, action_to_msg

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60.0
RATE_HZ = 10.0
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch"]  # the demo model's joint labels
# The demo model's worlds, named as the demo environments are -> (modality, a command the world takes)
WORLDS: dict[str, tuple[str, np.ndarray]] = {
    "mobile": ("twist", np.array([0.3, 0, 0, 0, 0, 0.4], np.float32)),
    "arm": ("joints", np.array([0.2, 0.6, 1.1, 0.4], np.float32)),
    "camera": ("camera_pose", np.array([0.0, 0.0, 1.2, 0.0, 0.0, 0.0, 1.0], np.float32)),
}
MSG_TYPES = {"twist": Twist, "joints": JointState, "camera_pose": PoseStamped}


def command(modality: str, value: np.ndarray, stamp_ns: int | None = None) -> Any:
    msg = action_to_msg(modality, value, MSG_TYPES[modality], joint_names=JOINTS)
    if hasattr(msg, "header"):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns() if stamp_ns is None else stamp_ns, 10**9)
    return msg


class Client(Node):
    """Publishes commands at a steady rate, records frames, status and diagnostics, calls services."""

    def __init__(self, context: Context) -> None:
        super().__init__("acceptance_client", context=context)
        self.lock = threading.Lock()
        self.frames: list[float] = []
        self.statuses: list[RolloutStatus] = []
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(
            Image, "image", lambda _: self._add(self.frames, time.monotonic()), qos_profile_sensor_data
        )
        self.create_subscription(RolloutStatus, "status", lambda m: self._add(self.statuses, m), 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.pubs = {
            m: self.create_publisher(MSG_TYPES[m], COMMAND_TOPICS[m], QoSProfile(depth=100)) for m in MSG_TYPES
        }
        self.steady: tuple[str, np.ndarray] | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._publish_steadily, daemon=True).start()

    def _add(self, into: list, item: Any) -> None:
        with self.lock:
            into.append(item)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("world_model_node: rollout"):
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values} | {"level": str(status.level[0])}

    def _publish_steadily(self) -> None:
        while not self._stop.wait(1 / RATE_HZ):
            if self.steady is not None:
                modality, value = self.steady
                self.pubs[modality].publish(command(modality, value))

    def frames_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for when in self.frames if when >= t)

    def diagnostic(self, key: str) -> int:
        with self.lock:
            return int(self.diagnostics.get(key, 0))

    def status_since(self, t: float) -> RolloutStatus:
        wait_for(lambda: self.frames_since(t) and self.statuses, "a status")
        time.sleep(1.1)  # one status period
        with self.lock:
            return self.statuses[-1]

    def call(
        self, srv_type: type, name: str, request: Any, timeout: float = TIMEOUT_S, sent: threading.Event | None = None
    ) -> Any:
        client = self.create_client(srv_type, f"/world_model_node/{name}")
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"{name} not offered"
            done = threading.Event()
            future = client.call_async(request)
            if sent is not None:
                sent.set()
            future.add_done_callback(lambda _: done.set())
            assert done.wait(timeout), f"{name} did not answer"
            return future.result()
        finally:
            self.destroy_client(client)

    def close(self) -> None:
        self._stop.set()


class NodeProcess:
    def __init__(self, domain: int) -> None:
        env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
        command_line = [sys.executable, "-m", "astra_ros.world_model_node", "--ros-args", "-p", "num_threads:=1"]
        self.process = subprocess.Popen(command_line, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(iter(self.process.stderr.readline, "")), daemon=True).start()

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        time.sleep(0.2)  # the reader takes the last lines
        return code, "".join(self.log)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


@pytest.fixture(scope="module")
def domain() -> int:
    return 11 + os.getpid() % 80  # clear of the other modules' domains (101..)


@pytest.fixture(scope="module")
def client(domain: int) -> Iterator[Client]:
    if not demo_model_path().is_dir():
        pytest.skip("the demo model is not installed")
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = Client(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    yield node
    node.close()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def node(client: Client, domain: int) -> Iterator[NodeProcess]:
    process = NodeProcess(domain)
    try:
        started = wait_for(lambda: client.frames_since(0) >= 2 or process.process.poll() is not None, "frames", 180)
        assert started and process.process.poll() is None, "".join(process.log)
        yield process
    finally:
        process.kill()


def reset(client: Client, world: str = "") -> None:
    client.steady = None
    response = client.call(Reset, "reset", Reset.Request(seed=-1, world=world))
    assert response.success, response.message


def drive(client: Client, world: str) -> float:
    """Reset, then drive `world` at 10 Hz; when the first command went out."""
    reset(client)
    modality, value = WORLDS[world]
    client.steady = (modality, value)
    return time.monotonic()


@pytest.mark.parametrize("world", list(WORLDS))
def test_every_world_streams_after_a_reset(client: Client, node: NodeProcess, world: str) -> None:
    modality, _ = WORLDS[world]
    topic = COMMAND_TOPICS[modality]
    refused = client.diagnostic(f"rejected {topic}")
    started = drive(client, world)
    wait_for(lambda: client.frames_since(started) >= 24, f"three chunks of the {world} world")
    status = client.status_since(started)
    assert status.world == world
    assert client.diagnostic(f"rejected {topic}") == refused, "valid commands were refused"
    assert client.diagnostics["level"] != "2", client.diagnostics  # not ERROR: no chunk failed


def test_a_command_for_another_world_is_refused_and_the_stream_goes_on(client: Client, node: NodeProcess) -> None:
    started = drive(client, "arm")
    wait_for(lambda: client.frames_since(started) >= 8, "the arm world's frames")
    refused = client.diagnostic("rejected cmd_vel")
    client.pubs["twist"].publish(command("twist", WORLDS["mobile"][1]))
    wait_for(lambda: client.diagnostic("rejected cmd_vel") == refused + 1, "the twist refused")
    after = time.monotonic()
    wait_for(lambda: client.frames_since(after) >= 16, "frames after the refused twist")
    assert client.status_since(after).world == "arm"


def test_a_future_stamp_is_refused_and_blocks_nothing(client: Client, node: NodeProcess) -> None:
    started = drive(client, "arm")
    wait_for(lambda: client.frames_since(started) >= 8, "the arm world's frames")
    refused = client.diagnostic("rejected joint_command")
    ahead = time.time_ns() + 100 * 10**9
    client.pubs["joints"].publish(command("joints", WORLDS["arm"][1], stamp_ns=ahead))
    after = time.monotonic()
    wait_for(lambda: client.frames_since(after) >= 24, "frames while later commands flow")
    # One refusal: later commands, stamped now, are not "out of order" behind the future one.
    assert client.diagnostic("rejected joint_command") == refused + 1


def test_a_burst_is_counted_and_the_stream_goes_on(client: Client, node: NodeProcess) -> None:
    started = drive(client, "mobile")
    wait_for(lambda: client.frames_since(started) >= 8, "the mobile world's frames")
    superseded = client.diagnostic("superseded cmd_vel")
    burst = time.monotonic()
    for k in range(600):  # 200 Hz for 3 s
        client.pubs["twist"].publish(command("twist", WORLDS["mobile"][1] * (k % 2)))
        time.sleep(max(0.0, burst + (k + 1) / 200 - time.monotonic()))
    assert client.frames_since(burst) >= 8, "the stream stalled during the burst"
    wait_for(lambda: client.diagnostic("superseded cmd_vel") > superseded, "the burst counted")
    assert any("burst:" in line and "superseded" in line for line in node.log), "the burst was not logged"


def candidates(modality: str, value: np.ndarray, count: int, chunks: int = 1) -> list[ActionCandidate]:
    frames = 8 * chunks
    return [
        ActionCandidate(
            sequences=[
                ActionSequence(
                    modality=modality,
                    num_frames=frames,
                    dim=len(value),
                    data=np.tile(value * (1 + 0.1 * i), (frames, 1)).ravel().tolist(),
                )
            ]
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("world", list(WORLDS))
def test_imagine_in_every_world_leaves_the_stream_running(client: Client, node: NodeProcess, world: str) -> None:
    modality, value = WORLDS[world]
    started = drive(client, world)
    wait_for(lambda: client.frames_since(started) >= 8, f"the {world} world's frames")
    called = time.monotonic()
    request = Imagine.Request(candidates=candidates(modality, value, 2), return_mode=Imagine.Request.RETURN_LAST_FRAME)
    response = client.call(Imagine, "imagine", request)
    assert response.success, response.message
    assert (response.num_candidates, len(response.frames)) == (2, 2)
    assert client.frames_since(called) >= 8, "the stream stalled while imagining"
    assert client.status_since(called).world == world


def test_imagine_refuses_two_worlds_before_forking(client: Client, node: NodeProcess) -> None:
    drive(client, "mobile")
    mixed = [*candidates("twist", WORLDS["mobile"][1], 1), *candidates("joints", WORLDS["arm"][1], 1)]
    response = client.call(Imagine, "imagine", Imagine.Request(candidates=mixed))
    assert not response.success and "several worlds" in response.message


def test_sigint_during_imagine_answers_the_caller_and_exits_quietly(client: Client, node: NodeProcess) -> None:
    drive(client, "mobile")
    request = Imagine.Request(candidates=candidates("twist", WORLDS["mobile"][1], 8, chunks=4))
    answer: list[Imagine.Response] = []
    sent = threading.Event()
    caller = threading.Thread(target=lambda: answer.append(client.call(Imagine, "imagine", request, sent=sent)))
    caller.start()
    assert sent.wait(TIMEOUT_S), "the imagine service was not offered"
    time.sleep(2.0)  # the call is under way in the node
    interrupted = time.monotonic()
    code, log = node.interrupt()
    caller.join(10)
    assert time.monotonic() - interrupted < 10, "shutdown was not prompt"
    assert answer and not answer[0].success and "shutting down" in answer[0].message
    assert code == 0, log
    for noise in ("Traceback", "never retrieved", "Destroyable", "context is invalid"):
        assert noise not in log, log
