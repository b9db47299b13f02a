"""The astra_msgs interfaces, built by scripts/build_interfaces.sh, used through real rclpy.

Each test that talks over ROS gets its own rclpy Context on its own ROS domain, with node, topic and
service names unique to this process, so parallel test runs cannot hear each other.
"""

from __future__ import annotations

import array
import itertools
import os
import threading
import time
from collections.abc import Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

try:
    from astra_msgs.msg import ActionCandidate, ActionSequence, RolloutStatus
    from astra_msgs.srv import Imagine, Reset
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError("astra_msgs is not installed: run scripts/build_interfaces.sh .venv") from exc

TIMEOUT_S = 20.0
_domain_offsets = itertools.count()


def _unique_domain_id() -> int:
    # ROS domain ids 1..100 are safe for Fast DDS's default port mapping.
    return 1 + (os.getpid() * 7 + next(_domain_offsets)) % 100


def _unique_name(base: str) -> str:
    return f"{base}_{os.getpid()}_{next(_domain_offsets)}"


class RosHarness:
    """One initialised rclpy Context with an executor spinning in a background thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=_unique_domain_id())
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self.context.ok():
                    raise

    def node(self, base_name: str) -> Node:
        node = Node(_unique_name(base_name), context=self.context)
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self) -> None:
        # Stop the spin thread first (context.ok() turns false), then tear down nodes and executor.
        self.context.try_shutdown()
        self._thread.join(timeout=TIMEOUT_S)
        assert not self._thread.is_alive(), "executor thread did not stop"
        for node in self.nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown()
        self.context.destroy()


@pytest.fixture
def ros() -> Iterator[RosHarness]:
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


def _sequence(modality: str, rows: list[list[float]]) -> ActionSequence:
    return ActionSequence(
        modality=modality,
        num_frames=len(rows),
        dim=len(rows[0]),
        data=[value for row in rows for value in row],
    )


def _candidate(scale: float, num_frames: int = 3) -> ActionCandidate:
    joints = [[scale * (t + 1), -scale * (t + 1)] for t in range(num_frames)]
    gripper = [[min(1.0, 0.5 * scale)] for _ in range(num_frames)]
    return ActionCandidate(sequences=[_sequence("joint_velocity", joints), _sequence("gripper", gripper)])


def _image(value: int, frame_id: str, width: int = 4, height: int = 3) -> Image:
    return Image(
        header=Header(frame_id=frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=bytes([value % 256]) * (width * height * 3),
    )


def test_message_fields_and_defaults() -> None:
    status = RolloutStatus()
    assert status.chunk_latency_ms == 0.0
    assert status.rollout_step == 0
    assert status.paused is False
    assert status.checkpoint == ""
    assert isinstance(status.header, Header)

    seq = _sequence("joint_velocity", [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    assert (seq.num_frames, seq.dim) == (3, 2)
    assert isinstance(seq.data, array.array) and seq.data.typecode == "f"
    assert len(seq.data) == seq.num_frames * seq.dim
    assert seq.data[3] == pytest.approx(0.4)

    # with field checks on (ROS_PYTHON_CHECK_FIELDS=1 or check_fields=True) types and ranges are enforced
    with pytest.raises(AssertionError):
        RolloutStatus(check_fields=True, history_length=-1)
    with pytest.raises(AssertionError):
        RolloutStatus(check_fields=True, history_length=2**32)
    with pytest.raises(AssertionError):
        RolloutStatus(check_fields=True, not_a_field=1)
    with pytest.raises(TypeError):  # float32[] is stored as array.array("f")
        ActionSequence(data=["not a float"])


def test_service_constants_and_types() -> None:
    assert (
        Imagine.Request.RETURN_FRAMES,
        Imagine.Request.RETURN_LAST_FRAME,
        Imagine.Request.RETURN_SUMMARY,
    ) == (
        0,
        1,
        2,
    )
    assert Imagine.Request().return_mode == Imagine.Request.RETURN_FRAMES
    assert Imagine.Response().frames == []
    reset = Reset.Request()
    assert reset.use_seed_image is False
    assert isinstance(reset.seed_image, Image)
    assert reset.seed == 0
    assert Reset.Request(seed=-1).seed == -1
    assert Reset.Response(success=True, message="ok").success is True


def test_serialization_round_trip_messages() -> None:
    status = RolloutStatus(
        header=Header(frame_id="camera"),
        chunk_latency_ms=41.5,
        frames_per_second=9.75,
        target_frames_per_second=10.0,
        history_length=8,
        rollout_step=2**40 + 3,
        frames_published=2**33,
        paused=True,
        checkpoint="checkpoints/astra-demo.safetensors",
    )
    status.header.stamp.sec = 1_700_000_000
    status.header.stamp.nanosec = 123
    blob = serialize_message(status)
    assert isinstance(blob, bytes) and len(blob) > 0
    assert deserialize_message(blob, RolloutStatus) == status

    candidate = _candidate(0.25)
    back = deserialize_message(serialize_message(candidate), ActionCandidate)
    assert back == candidate
    assert [s.modality for s in back.sequences] == ["joint_velocity", "gripper"]
    assert list(back.sequences[0].data) == pytest.approx([0.25, -0.25, 0.5, -0.5, 0.75, -0.75])


def test_serialization_round_trip_services() -> None:
    request = Imagine.Request(
        candidates=[_candidate(0.5), _candidate(1.0, num_frames=2)],
        return_mode=Imagine.Request.RETURN_LAST_FRAME,
    )
    assert deserialize_message(serialize_message(request), Imagine.Request) == request

    response = Imagine.Response(
        success=True,
        message="imagined 2 candidates",
        num_candidates=2,
        frames_per_candidate=1,
        frames=[_image(10, "c0"), _image(200, "c1")],
        mean_abs_change=[1.5, 254.0],
        compute_time_ms=12.5,
    )
    back = deserialize_message(serialize_message(response), Imagine.Response)
    assert back == response
    assert bytes(back.frames[1].data) == bytes([200]) * (4 * 3 * 3)

    reset = Reset.Request(use_seed_image=True, seed_image=_image(7, "seed"), seed=-1)
    assert deserialize_message(serialize_message(reset), Reset.Request) == reset
    reply = Reset.Response(success=False, message="no model loaded")
    assert deserialize_message(serialize_message(reply), Reset.Response) == reply


def _imagine(request: Imagine.Request, response: Imagine.Response) -> Imagine.Response:
    """A stand-in world model: frame brightness follows the summed absolute actions."""
    start = time.perf_counter()
    if request.return_mode not in (
        Imagine.Request.RETURN_FRAMES,
        Imagine.Request.RETURN_LAST_FRAME,
        Imagine.Request.RETURN_SUMMARY,
    ):
        response.success = False
        response.message = f"unknown return_mode {request.return_mode}"
        return response
    lengths = {seq.num_frames for cand in request.candidates for seq in cand.sequences}
    if len(lengths) > 1:
        response.success = False
        response.message = f"candidates disagree on the number of frames: {sorted(lengths)}"
        return response
    num_frames = lengths.pop() if lengths else 0
    for index, cand in enumerate(request.candidates):
        levels = []
        for t in range(num_frames):
            total = sum(abs(v) for seq in cand.sequences for v in seq.data[t * seq.dim : (t + 1) * seq.dim])
            levels.append(min(255, round(100 * total)))
        returned = {
            Imagine.Request.RETURN_FRAMES: range(num_frames),
            Imagine.Request.RETURN_LAST_FRAME: range(num_frames - 1, num_frames) if num_frames else range(0),
            Imagine.Request.RETURN_SUMMARY: range(0),
        }[request.return_mode]
        for t in returned:
            response.frames.append(_image(levels[t], f"candidate{index}/frame{t}"))
        response.mean_abs_change.append(float(levels[-1]) if levels else 0.0)
    response.num_candidates = len(request.candidates)
    response.frames_per_candidate = {
        Imagine.Request.RETURN_FRAMES: num_frames,
        Imagine.Request.RETURN_LAST_FRAME: min(1, num_frames),
        Imagine.Request.RETURN_SUMMARY: 0,
    }[request.return_mode]
    response.success = True
    response.message = f"imagined {response.num_candidates} candidates"
    response.compute_time_ms = (time.perf_counter() - start) * 1000.0
    return response


def test_imagine_service_in_process(ros: RosHarness) -> None:
    service_name = _unique_name("/astra_test/imagine")
    server = ros.node("astra_imagine_server")
    server.create_service(Imagine, service_name, _imagine)
    client = ros.node("astra_imagine_client").create_client(Imagine, service_name)
    assert client.wait_for_service(timeout_sec=TIMEOUT_S), "Imagine service never appeared"

    candidates = [_candidate(0.1), _candidate(1.0), _candidate(0.0)]
    response = client.call(Imagine.Request(candidates=candidates), timeout_sec=TIMEOUT_S)
    assert isinstance(response, Imagine.Response)
    assert response.success, response.message
    assert (response.num_candidates, response.frames_per_candidate) == (3, 3)
    assert len(response.frames) == response.num_candidates * response.frames_per_candidate
    # candidate-major order
    assert [f.header.frame_id for f in response.frames[:4]] == [
        "candidate0/frame0",
        "candidate0/frame1",
        "candidate0/frame2",
        "candidate1/frame0",
    ]
    first = response.frames[0]
    assert (first.height, first.width, first.encoding, first.step) == (3, 4, "rgb8", 12)
    assert len(first.data) == first.height * first.step
    # brightness of candidate 0 grows with its actions: 100 * (|joints| + |gripper|) per frame
    assert [f.data[0] for f in response.frames[:3]] == [25, 45, 65]
    assert list(response.mean_abs_change) == pytest.approx([65.0, 255.0, 0.0])
    assert all(0.0 <= v <= 255.0 for v in response.mean_abs_change)
    assert response.compute_time_ms >= 0.0

    last = client.call(
        Imagine.Request(candidates=candidates[:2], return_mode=Imagine.Request.RETURN_LAST_FRAME),
        timeout_sec=TIMEOUT_S,
    )
    assert last.success and last.frames_per_candidate == 1
    assert [f.header.frame_id for f in last.frames] == ["candidate0/frame2", "candidate1/frame2"]

    summary = client.call(
        Imagine.Request(candidates=candidates, return_mode=Imagine.Request.RETURN_SUMMARY),
        timeout_sec=TIMEOUT_S,
    )
    assert summary.success and summary.frames == [] and summary.frames_per_candidate == 0
    assert list(summary.mean_abs_change) == pytest.approx(list(response.mean_abs_change))

    bad = client.call(Imagine.Request(candidates=candidates, return_mode=7), timeout_sec=TIMEOUT_S)
    assert not bad.success and "return_mode" in bad.message


def test_reset_service_in_process(ros: RosHarness) -> None:
    received: list[Reset.Request] = []

    def reset(request: Reset.Request, response: Reset.Response) -> Reset.Response:
        received.append(request)
        response.success = not request.use_seed_image or len(request.seed_image.data) > 0
        response.message = "reset" if response.success else "seed image is empty"
        return response

    service_name = _unique_name("/astra_test/reset")
    ros.node("astra_reset_server").create_service(Reset, service_name, reset)
    client = ros.node("astra_reset_client").create_client(Reset, service_name)
    assert client.wait_for_service(timeout_sec=TIMEOUT_S), "Reset service never appeared"

    ok = client.call(Reset.Request(use_seed_image=True, seed_image=_image(3, "seed"), seed=42), TIMEOUT_S)
    assert ok.success and ok.message == "reset"
    empty = client.call(Reset.Request(use_seed_image=True, seed=-1), TIMEOUT_S)
    assert not empty.success
    assert [r.seed for r in received] == [42, -1]
    assert received[0].seed_image.header.frame_id == "seed"


def test_rollout_status_publish_subscribe(ros: RosHarness) -> None:
    topic = _unique_name("/astra_test/status")
    got: list[RolloutStatus] = []
    arrived = threading.Event()

    def on_status(msg: RolloutStatus) -> None:
        got.append(msg)
        arrived.set()

    ros.node("astra_status_listener").create_subscription(RolloutStatus, topic, on_status, 10)
    publisher = ros.node("astra_status_talker").create_publisher(RolloutStatus, topic, 10)
    sent = RolloutStatus(frames_per_second=9.5, rollout_step=17, checkpoint="demo", paused=False)

    deadline = time.monotonic() + TIMEOUT_S
    while not arrived.is_set() and time.monotonic() < deadline:
        if publisher.get_subscription_count() > 0:
            publisher.publish(sent)
        arrived.wait(0.1)
    assert got, "no RolloutStatus arrived"
    assert got[0] == sent
