"""The world-model node over real rclpy, in process: streams, bad input, parameters, services, shutdown.

One rclpy Context on a ROS domain of this process's own spins the node under test and a probe node in
a MultiThreadedExecutor thread; topics live under a namespace unique to this process. The model is
the tiny preset with 32x32 frames, 2 denoising steps and no guidance, so a chunk takes ~0.1 s.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import torch
import yaml
from astra_msgs.msg import ActionCandidate, ActionSequence, RolloutStatus
from astra_msgs.srv import Imagine, Reset
from conftest import own_worlds, randomise_action_path, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Twist
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from astra_model import AstraConfig, AstraWorldModel
from astra_ros.frame_pipeline import ActionChannel, ModelClock
from astra_ros.image_conversion import image_msg_to_rgb, rgb_to_image_msg, stamp_to_ns
from astra_ros.world_model_node import StartupError, WorldModelNode

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 30.0
FPS = 20.0
SIZE = 32
FRAMES_PER_CHUNK = 8  # tiny preset
NAMESPACE = f"/wm_test_{os.getpid()}"
FAST = {"denoising_steps": 2, "guidance_scale": 0.0, "frame_rate": FPS, "num_threads": 1}


def _domain_id(offset: int) -> int:
    # 101..220: clear of the 1..100 other test modules use, inside Fast DDS's port range.
    return 101 + (os.getpid() + offset) % 120


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = AstraWorldModel(AstraConfig.preset("tiny")).eval()
    randomise_action_path(model)  # untrained experts ignore actions; imagined candidates should differ
    model.seed_frame = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("tiny-world")
    model.save_pretrained(path)
    return path


def ros_args(checkpoint: Path) -> list[str]:
    """The node's command-line arguments for `checkpoint` at the fast test settings."""
    pairs = (("-p", f"{name}:={value}") for name, value in {"checkpoint": checkpoint, **FAST}.items())
    return ["--ros-args", *itertools.chain.from_iterable(pairs)]


def overrides(checkpoint: Path, **values: Any) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in {"checkpoint": str(checkpoint), **FAST, **values}.items()]


class Probe(Node):
    """Publishes commands to the node under test and records what it publishes."""

    def __init__(self, context: Context, namespace: str) -> None:
        super().__init__(f"probe_{os.getpid()}", context=context, namespace=namespace)
        self.lock = threading.Lock()
        self.frames: list[tuple[float, Image]] = []
        self.infos: list[CameraInfo] = []
        self.statuses: list[tuple[float, RolloutStatus]] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.clocks: list[ClockMsg] = []
        self._record("image", Image, self.frames, qos_profile_sensor_data, stamped=True)
        self._record("camera_info", CameraInfo, self.infos, qos_profile_sensor_data)
        self._record("status", RolloutStatus, self.statuses, 10, stamped=True)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._record("/clock", ClockMsg, self.clocks, 10)
        reliable = QoSProfile(depth=100)
        self.cmd_vel = self.create_publisher(Twist, "cmd_vel", reliable)
        self.joints = self.create_publisher(JointState, "joint_command", reliable)
        self.pose = self.create_publisher(PoseStamped, "camera_pose_cmd", reliable)
        self.seed = self.create_publisher(Image, "seed_image", qos_profile_sensor_data)

    def _record(self, topic: str, msg_type: type, into: list, qos: Any, stamped: bool = False) -> None:
        def callback(msg: Any) -> None:
            with self.lock:
                into.append((time.monotonic(), msg) if stamped else msg)

        self.create_subscription(msg_type, topic, callback, qos)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.extend(msg.status)

    def frames_since(self, t: float) -> list[Image]:
        with self.lock:
            return [msg for when, msg in self.frames if when >= t]

    def statuses_since(self, t: float) -> list[RolloutStatus]:
        with self.lock:
            return [msg for when, msg in self.statuses if when >= t]

    def call(self, srv_type: type, name: str, request: Any) -> Any:
        client = self.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=TIMEOUT_S), f"service {name} not available"
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            assert done.wait(TIMEOUT_S), f"service {name} did not answer"
            return future.result()
        finally:
            self.destroy_client(client)


class Harness:
    """rclpy Context with the node under test and a probe spinning in a background thread."""

    def __init__(self, checkpoint: Path) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=_domain_id(0))
        self.executor = MultiThreadedExecutor(num_threads=8, context=self.context)
        self.node = self.add(
            WorldModelNode(context=self.context, namespace=NAMESPACE, parameter_overrides=overrides(checkpoint))
        )
        self.probe = self.add(Probe(self.context, NAMESPACE))
        self._removed: list[Node] = []
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node: Node) -> Any:
        self.executor.add_node(node)
        return node

    def remove(self, node: Node) -> None:
        # Destroyed in close(): the spin thread may still hold the node's QoS event handlers in a wait set it
        # is building, and rclpy raises InvalidHandle in that thread if they are destroyed under it.
        self.executor.remove_node(node)
        self._removed.append(node)

    def close(self) -> None:
        # The spin thread ends before the nodes go, so no callback runs on a destroyed node.
        self.executor.shutdown(timeout_sec=TIMEOUT_S)
        self._thread.join(TIMEOUT_S)
        for node in (self.node, self.probe, *self._removed):
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def ros(checkpoint: Path) -> Harness:
    threads = torch.get_num_threads()  # the node sets torch's (process-wide) thread count
    harness = Harness(checkpoint)
    yield harness
    harness.close()
    torch.set_num_threads(threads)


def srv(name: str) -> str:
    return f"{NAMESPACE}/world_model_node/{name}"


def rgb_image(size: int = SIZE, encoding: str = "rgb8", seed: int = 1) -> Image:
    rgb = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb, Image)
    if encoding == "bgr8":
        msg = rgb_to_image_msg(rgb[..., ::-1].copy(), Image)
    msg.encoding = encoding
    return msg


def twist(x: float = 0.5, yaw: float = 0.0) -> Twist:
    msg = Twist()
    msg.linear.x, msg.angular.z = x, yaw
    return msg


def joint_state(names: list[str], stamp_ns: int = 0) -> JointState:
    msg = JointState(name=names, position=[0.1 * i for i in range(len(names))])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def diagnostic_values(ros: Harness) -> dict[str, str]:
    name = f"{NAMESPACE}/world_model_node: rollout"
    with ros.probe.lock:
        mine = [d for d in ros.probe.diagnostics if d.name == name]
    return {kv.key: kv.value for kv in mine[-1].values} if mine else {}


def test_twist_holds_while_commands_are_fresh_at_planning_time() -> None:
    channel = ActionChannel("twist", 6, timeout_ns=500_000_000)
    future = [2_000_000_000 + j for j in range(3)]  # frame times well past the timeout
    assert not channel.sample(future, now_ns=0).any(), "no command yet: zero twist"
    channel.push(0, np.full(6, 0.5, np.float32))
    assert (channel.sample(future, now_ns=400_000_000) == 0.5).all()
    assert not channel.sample(future, now_ns=600_000_000).any(), "stale at planning time: back to zero"


def test_position_targets_hold_and_wait_for_a_first_command() -> None:
    joints, pose = ActionChannel("joints", 4, timeout_ns=1), ActionChannel("camera_pose", 7, timeout_ns=1)
    assert joints.sample([10], now_ns=0) is None
    assert pose.sample([10], now_ns=0) is None
    joints.push(0, np.arange(4, dtype=np.float32))
    assert (joints.sample([10**12], now_ns=10**12) == np.arange(4)).all(), "targets never time out"
    joints.clear()
    assert joints.sample([10], now_ns=0) is None


def test_model_clock() -> None:
    simulated = ModelClock(True, lambda: 123)
    assert [simulated.stamp_next_frame(100) for _ in range(3)] == [0, 100, 200]
    assert simulated.now_ns() == 200
    wall_now = [1_000]
    wall = ModelClock(False, lambda: wall_now[0])
    stamps = []
    for now in (1_000, 1_130, 1_190, 5_000):  # on time, jittered, jittered, after a stall
        wall_now[0] = now
        stamps.append(wall.stamp_next_frame(100))
    assert stamps == [1_000, 1_100, 1_200, 5_000]


def test_streams_frames_camera_info_and_status(ros: Harness) -> None:
    start = time.monotonic()
    for _ in range(5):
        ros.probe.cmd_vel.publish(twist())
        time.sleep(0.05)
    frames = wait_for(lambda: (f := ros.probe.frames_since(start)) and len(f) >= 10 and f, what="10 frames")
    for msg in frames:
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", SIZE, SIZE, 3 * SIZE)
        assert msg.header.frame_id == "camera_optical_frame"
        assert image_msg_to_rgb(msg).shape == (SIZE, SIZE, 3)
    stamps = [stamp_to_ns(msg.header.stamp) for msg in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps)), "frame stamps must increase"

    def info_for(stamp: int) -> CameraInfo | None:
        with ros.probe.lock:
            return next((info for info in ros.probe.infos if stamp_to_ns(info.header.stamp) == stamp), None)

    info = wait_for(lambda: info_for(stamps[-2]) or info_for(stamps[-3]), what="matching camera_info")
    assert (info.width, info.height, info.header.frame_id) == (SIZE, SIZE, "camera_optical_frame")
    focal = (SIZE / 2) / math.tan(math.radians(60.0) / 2)
    assert info.k[0] == pytest.approx(focal) and info.k[2] == pytest.approx(SIZE / 2)
    status = wait_for(lambda: ros.probe.statuses_since(start), what="status")[-1]
    assert status.target_frames_per_second == pytest.approx(FPS)
    assert status.checkpoint == str(ros.node.checkpoint) and not status.paused
    assert status.rollout_step >= 1 and status.history_length >= 1


def test_seed_image_regrounds_the_rollout(ros: Harness) -> None:
    published = wait_for(
        lambda: max((s.frames_published for s in ros.probe.statuses_since(0)), default=0) >= 30 and 30,
        what="30 frames published",
    )
    seeded = time.monotonic()
    ros.probe.seed.publish(rgb_image(encoding="bgr8"))
    wait_for(
        lambda: [s for s in ros.probe.statuses_since(seeded + 0.1) if s.frames_published < published],
        what="a status after the restart",
    )
    wait_for(lambda: len(ros.probe.frames_since(seeded + 0.5)) >= 5, what="frames after the restart")


def test_bad_input_is_refused_and_the_stream_goes_on(ros: Harness) -> None:
    probe = ros.probe
    before = diagnostic_values(ros)
    nan_twist = twist(float("nan"))
    nan_pose = PoseStamped()
    nan_pose.pose.orientation.w = float("nan")
    now_ns = ros.node.get_clock().now().nanoseconds
    # Spaced beyond max_command_rate, so that each message is checked rather than superseded by the next.
    spaced = 2 / ros.node.get_parameter("max_command_rate").value
    probe.cmd_vel.publish(nan_twist)
    probe.pose.publish(nan_pose)
    for msg in (
        joint_state(["joint1", "joint2", "joint3"]),  # wrong count
        joint_state(["joint1", "joint2", "joint3", "elbow"]),  # unknown name
        joint_state(["joint1", "joint2", "joint3", "joint4"], stamp_ns=now_ns),
        joint_state(["joint1", "joint2", "joint3", "joint4"], stamp_ns=now_ns - 10**9),  # older
    ):
        probe.joints.publish(msg)
        time.sleep(spaced)
    for image in (
        rgb_image(encoding="mono16"),  # unsupported encodings
        rgb_image(encoding="yuv422"),
        rgb_image(size=16),  # wrong size
    ):
        probe.seed.publish(image)
        time.sleep(0.2)  # best-effort images: do not outrun the subscriber's queue
    for i in range(500):  # a burst: the newest waits, the ones it replaces are counted
        probe.cmd_vel.publish(twist(x=0.001 * i))
    after_bad_input = time.monotonic()

    def rejected(topic: str) -> int:
        return int(diagnostic_values(ros).get(f"rejected {topic}", 0)) - int(before.get(f"rejected {topic}", 0))

    wait_for(
        lambda: (
            (rejected("cmd_vel"), rejected("camera_pose_cmd"), rejected("joint_command"), rejected("seed_image"))
            == (1, 1, 3, 3)
        ),
        what="every bad message refused",
    )
    wait_for(lambda: int(diagnostic_values(ros).get("superseded cmd_vel", 0)) > 0, what="the burst counted")
    wait_for(lambda: len(probe.frames_since(after_bad_input)) >= 20, what="frames after the bad input")
    assert ros.node.pipeline.last_error == ""


def test_parameters_are_validated_with_a_reason(ros: Harness, checkpoint: Path) -> None:
    bad = {
        "frame_rate": -1.0,
        "guidance_scale": float("nan"),
        "denoising_steps": 0,
        "fov_deg": 200.0,
        "frame_id": "",
        "image_width": 30,
        "device": "tpu",
        "chunk_latent_frames": 3,
    }
    for name, value in bad.items():
        (result,) = ros.node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and result.reason, name
    (result,) = ros.node.set_parameters([Parameter("guidance_scale", value=-0.5)])
    assert "guidance_scale must be -1 (the model's) or a scale in [0, 20], got -0.5" in result.reason
    # -1 hands each chunk the model's scale for the world it commands.
    (result,) = ros.node.set_parameters([Parameter("guidance_scale", value=-1.0)])
    assert result.successful and ros.node._sampler_settings()["guidance_scale"] is None
    ros.node.set_parameters([Parameter("guidance_scale", value=FAST["guidance_scale"])])
    assert ros.node._sampler_settings()["guidance_scale"] == 0.0
    request = SetParameters.Request(parameters=[Parameter("frame_rate", value=-1.0).to_parameter_msg()])
    (remote,) = ros.probe.call(SetParameters, srv("set_parameters"), request).results
    assert not remote.successful and "frame_rate" in remote.reason
    assert ros.node.get_parameter("frame_rate").value == FPS
    (ok,) = ros.node.set_parameters([Parameter("frame_rate", value=25.0)])
    assert ok.successful and ros.node._frame_timer.timer_period_ns == 40_000_000
    ros.node.set_parameters([Parameter("frame_rate", value=FPS)])


@pytest.mark.parametrize(
    ("name", "value", "error", "reason"),
    [
        ("image_width", 30, ParameterException, "step"),
        ("device", "tpu", ParameterException, "device"),
        ("frame_rate", -1.0, ParameterException, "frame_rate"),
        ("dtype", "float16", ParameterException, "dtype"),
        ("chunk_latent_frames", 3, StartupError, "property of the model"),
        ("joint_names", ["a", "b"], StartupError, "joint_names"),
    ],
)
def test_bad_start_up_parameters_stop_the_node_with_a_reason(
    ros: Harness, checkpoint: Path, name: str, value: Any, error: type, reason: str
) -> None:
    with pytest.raises(error, match=reason):
        WorldModelNode(
            context=ros.context,
            namespace=f"{NAMESPACE}/bad",
            parameter_overrides=overrides(checkpoint, **{name: value}),
        )


def test_the_shipped_parameter_file_starts_the_node_with_its_values(ros: Harness, checkpoint: Path) -> None:
    shipped = yaml.safe_load((REPO / "config/world_model.yaml").read_text())["world_model_node"]["ros__parameters"]
    values = {name: value for name, value in shipped.items() if name != "checkpoint"}  # keep the test's model
    node = WorldModelNode(
        context=ros.context, namespace=f"{NAMESPACE}/shipped", parameter_overrides=overrides(checkpoint, **values)
    )
    try:
        assert {name: node.get_parameter(name).value for name in values} == values
    finally:
        node.destroy_node()


def test_a_separate_world_is_driven_alone_until_a_reset(ros: Harness, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AstraWorldModel(AstraConfig.preset("tiny").replace(worlds=own_worlds("joints")))
    model.seed_frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    model.save_pretrained(tmp_path)
    namespace = f"{NAMESPACE}/worlds"
    node = ros.add(WorldModelNode(context=ros.context, namespace=namespace, parameter_overrides=overrides(tmp_path)))

    def reset(world: str = "") -> Reset.Response:
        return ros.probe.call(Reset, f"{namespace}/world_model_node/reset", Reset.Request(seed=-1, world=world))

    try:
        joints = joint_state(["joint1", "joint2", "joint3", "joint4"])
        assert node.world is None and node._plan([0], 0).keys() == {"twist"}, "idle: a held-still twist"
        node._on_command("twist", "cmd_vel", twist())
        node._on_command("camera_pose", "camera_pose_cmd", PoseStamped())  # shares the weights of twist
        node._on_command("joints", "joint_command", joints)
        assert (node.rejected["cmd_vel"], node.rejected["camera_pose_cmd"], node.rejected["joint_command"]) == (0, 0, 1)
        assert node.channels["joints"].last_stamp_ns is None  # the refused command was not kept
        assert node.world == "shared" and node._plan([0], 0).keys() == {"twist", "camera_pose"}
        assert reset().success and node.world is None
        node._on_command("joints", "joint_command", joints)
        node._on_command("twist", "cmd_vel", twist())
        assert (node.rejected["joint_command"], node.rejected["cmd_vel"]) == (1, 1)
        assert node.world == "joints" and node._plan([0], 0).keys() == {"joints"}, "no neutral twist mixed in"
        assert reset("shared").success and node.world == "shared"
        node._on_command("joints", "joint_command", joints)
        assert node.rejected["joint_command"] == 2
        unknown = reset("arm")
        assert not unknown.success and "unknown world 'arm'" in unknown.message and node.world == "shared"
    finally:
        ros.remove(node)


def test_pause_and_resume(ros: Harness) -> None:
    assert ros.probe.call(Trigger, srv("pause"), Trigger.Request()).success
    time.sleep(0.3)  # a frame already being published may still arrive
    quiet = time.monotonic()
    time.sleep(1.5)
    assert ros.probe.frames_since(quiet) == [], "frames arrived while paused"
    assert wait_for(lambda: ros.probe.statuses_since(quiet), what="status")[-1].paused
    assert ros.probe.call(Trigger, srv("pause"), Trigger.Request()).message == "already paused"
    assert ros.probe.call(Trigger, srv("resume"), Trigger.Request()).success
    resumed = time.monotonic()
    wait_for(lambda: len(ros.probe.frames_since(resumed)) >= 5, what="frames after resume")


def test_reset_service(ros: Harness) -> None:
    def reset(use_seed_image: bool = False, image: Image | None = None, seed: int = -1) -> Reset.Response:
        request = Reset.Request(use_seed_image=use_seed_image, seed=seed)
        if image is not None:
            request.seed_image = image
        return ros.probe.call(Reset, srv("reset"), request)

    assert reset().success
    assert reset(True, rgb_image(encoding="bgr8"), seed=7).success
    wrong_size = reset(True, rgb_image(size=16))
    assert not wrong_size.success and "size" in wrong_size.message
    wrong_encoding = reset(True, rgb_image(encoding="yuv422"))
    assert not wrong_encoding.success and "yuv422" in wrong_encoding.message
    assert not reset(seed=-5).success
    after = time.monotonic()
    wait_for(lambda: len(ros.probe.frames_since(after)) >= 5, what="frames after reset")


def candidates(twists: list[float], num_frames: int = 2 * FRAMES_PER_CHUNK) -> list[ActionCandidate]:
    return [
        ActionCandidate(
            sequences=[
                ActionSequence(modality="twist", num_frames=num_frames, dim=6, data=[x, 0, 0, 0, 0, 0.3] * num_frames)
            ]
        )
        for x in twists
    ]


def reference_frames(checkpoint: Path, seed: int, chunks: int) -> np.ndarray:
    """What the node publishes after a reset with ``seed`` when no command arrives: neutral actions."""
    model = AstraWorldModel.from_pretrained(checkpoint)
    session = model.start(model.seed_frame, seed=seed)
    neutral = {"twist": np.zeros((FRAMES_PER_CHUNK, 6), np.float32)}  # no pose before a first pose command
    return np.concatenate([session.step(neutral, guidance_scale=0.0, steps=2) for _ in range(chunks)])


def test_imagine_does_not_disturb_the_live_rollout(ros: Harness, checkpoint: Path) -> None:
    assert ros.probe.call(Reset, srv("reset"), Reset.Request(seed=3)).success  # also forgets earlier commands
    reset_at = time.monotonic()
    wait_for(lambda: len(ros.probe.frames_since(reset_at + 0.2)) >= 4, what="frames after reset")
    steps_before = ros.node.pipeline.step_count
    response = ros.probe.call(Imagine, srv("imagine"), Imagine.Request(candidates=candidates([0.0, 1.0, -1.0])))
    assert response.success, response.message
    assert (response.num_candidates, response.frames_per_candidate, len(response.frames)) == (3, 16, 48)
    assert all((f.encoding, f.height, f.width) == ("rgb8", SIZE, SIZE) for f in response.frames)
    last = [image_msg_to_rgb(response.frames[16 * i + 15]).astype(int) for i in range(3)]
    assert np.abs(last[1] - last[2]).max() > 0, "candidates with different actions should differ"
    assert len(response.mean_abs_change) == 3 and all(0 <= c <= 255 for c in response.mean_abs_change)

    # Chunk steps_before + 1 was computed after the fork; its frames must still follow the undisturbed rollout.
    after_fork = (steps_before + 1) * FRAMES_PER_CHUNK
    received = wait_for(
        lambda: (f := ros.probe.frames_since(reset_at + 0.2)) and len(f) >= after_fork + 4 and f,
        what="frames computed after imagine",
    )
    expected = reference_frames(checkpoint, seed=3, chunks=ros.node.pipeline.step_count + 1)
    indices = []
    for msg in received:
        diffs = np.abs(expected.astype(int) - image_msg_to_rgb(msg).astype(int)).max(axis=(1, 2, 3))
        assert diffs.min() <= 1, f"a published frame differs from the undisturbed rollout by {diffs.min()}"
        indices.append(int(diffs.argmin()))
    assert indices == sorted(indices) and indices[-1] >= after_fork


def test_imagine_return_modes_and_refusals(ros: Harness) -> None:
    def imagine(request: Imagine.Request) -> Imagine.Response:
        return ros.probe.call(Imagine, srv("imagine"), request)

    last = imagine(Imagine.Request(candidates=candidates([0.1, 0.2]), return_mode=Imagine.Request.RETURN_LAST_FRAME))
    assert last.success and (last.frames_per_candidate, len(last.frames)) == (1, 2)
    summary = imagine(Imagine.Request(candidates=candidates([0.1]), return_mode=Imagine.Request.RETURN_SUMMARY))
    assert summary.success and len(summary.frames) == 0 and len(summary.mean_abs_change) == 1
    odd = imagine(Imagine.Request(candidates=candidates([0.1], num_frames=5)))
    assert not odd.success and "multiple" in odd.message
    unknown = ActionCandidate(sequences=[ActionSequence(modality="gripper", num_frames=8, dim=1, data=[0.0] * 8)])
    refused = imagine(Imagine.Request(candidates=[unknown]))
    assert not refused.success and "gripper" in refused.message
    joints = ActionCandidate(sequences=[ActionSequence(modality="joints", num_frames=8, dim=4, data=[0.0] * 32)])
    mixed = imagine(Imagine.Request(candidates=[joints, *candidates([0.1], num_frames=8)]))
    assert not mixed.success and "joints" in mixed.message  # no joint command to hold for candidate 1
    assert not imagine(Imagine.Request(candidates=[])).success


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("sim", {}),
        # 80 denoising steps: far slower than the 20 frames/s asked (at 20, a quiet 2-core machine can
        # keep up with the tiny model); model time slows down with it.
        ("slow", {"real_time_factor": 1.0, "denoising_steps": 80}),
        ("fast", {"real_time_factor": 0.0}),  # as fast as the model computes
    ],
)
def test_publish_clock_runs_model_time(ros: Harness, checkpoint: Path, name: str, settings: dict) -> None:
    namespace = f"{NAMESPACE}/{name}"
    with ros.probe.lock:
        earlier = len(ros.probe.clocks)  # /clock is global: other nodes' ticks came before this one
    node = ros.add(
        WorldModelNode(
            context=ros.context,
            namespace=namespace,
            parameter_overrides=overrides(checkpoint, publish_clock=True, image_qos="reliable", **settings),
        )
    )
    frames: list[Image] = []
    statuses: list[RolloutStatus] = []
    subs = [
        ros.probe.create_subscription(Image, f"{namespace}/image", frames.append, QoSProfile(depth=100)),
        ros.probe.create_subscription(RolloutStatus, f"{namespace}/status", statuses.append, 10),
    ]
    try:
        wait_for(lambda: len(frames) >= 16, timeout=2 * TIMEOUT_S, what="frames in model time")
        period = round(1e9 / FPS)
        stamps = [stamp_to_ns(msg.header.stamp) for msg in frames]
        assert all(b - a == period for a, b in itertools.pairwise(stamps)), "a gap or a repeat in model time"
        assert stamps[0] % period == 0, "model time starts at 0 and advances one period per frame"
        with ros.probe.lock:
            clocks = [stamp_to_ns(msg.clock) for msg in ros.probe.clocks[earlier:]]
        assert clocks == sorted(clocks) and set(clocks) & set(stamps), "/clock follows the frame stamps"
        status = wait_for(lambda: [s for s in statuses if s.rollout_step >= 3], what="a status")[-1]
        assert status.real_time_factor == pytest.approx(status.frames_per_second / FPS, rel=1e-5)
        if name == "slow":
            assert 0 < status.real_time_factor < 1, "80 steps cannot keep real time here"
    finally:
        for sub in subs:
            ros.probe.destroy_subscription(sub)
        ros.remove(node)


def test_a_real_time_factor_needs_simulated_time(ros: Harness, checkpoint: Path) -> None:
    with pytest.raises(StartupError, match="needs simulated time"):
        WorldModelNode(
            context=ros.context,
            namespace=f"{NAMESPACE}/rtf",
            parameter_overrides=overrides(checkpoint, real_time_factor=2.0),
        )


def test_sigint_shuts_down_cleanly(checkpoint: Path) -> None:
    env = {**os.environ, "ROS_DOMAIN_ID": str(_domain_id(60)), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "astra_ros.world_model_node", *ros_args(checkpoint)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("first frame published" in line for line in stderr), timeout=120, what="frames")
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    output = "".join(stderr) + process.stdout.read()
    assert returncode == 0, output
    assert "Traceback" not in output
