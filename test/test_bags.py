"""Episode I/O on rosbag2 bags built here with rosbags directly, and the zero-order hold behind it."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from astra_ros.action_conversion import ActionConversionError
from astra_ros.bags import BagError, EpisodeWriter, read_episode, write_episode
from astra_ros.resample import OutOfOrderError, ZeroOrderHold, zoh_resample

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
MS = 1_000_000
S0 = 100_000_000_000  # episode start: 100 s
STORAGES = pytest.mark.parametrize("storage", ["mcap", "sqlite3"])

CAM = "/robot1/front_cam/image_raw"
CMD_VEL = "/robot1/cmd_vel"
JOINT_TOPIC = "/robot1/arm/joint_commands"
POSE_TOPIC = "/robot1/camera_pose"
TOPIC_TYPES = {
    CAM: "sensor_msgs/msg/Image",
    CMD_VEL: "geometry_msgs/msg/Twist",
    JOINT_TOPIC: "sensor_msgs/msg/JointState",
    POSE_TOPIC: "geometry_msgs/msg/PoseStamped",
    "/robot1/status": "std_msgs/msg/String",
}
ACTION_TOPICS = {"twist": CMD_VEL, "joints": JOINT_TOPIC, "camera_pose": POSE_TOPIC}
JOINTS = ["shoulder", "elbow"]
FRAMES = np.random.default_rng(1).integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)

V1, V2 = [0.5, 0.0, 0.0, 0.0, 0.0, 0.25], [-0.5, 0.125, 0.0, 0.0, 0.0, -1.0]
P1, P2 = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0], [4.0, 5.0, 6.0, 0.0, 0.0, 1.0, 0.0]
ZERO6 = [0.0] * 6


# --- messages built with rosbags' own classes -------------------------------------------------


def header(stamp_ns: int, frame_id: str = "cam") -> object:
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image(stamp_ns: int, rgb: np.ndarray, encoding: str = "rgb8") -> object:
    h, w, _ = rgb.shape
    return T["sensor_msgs/msg/Image"](header(stamp_ns), h, w, encoding, 0, 3 * w, rgb.reshape(-1).copy())


def twist(values: list[float]) -> object:
    vec = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/Twist"](linear=vec(*values[:3]), angular=vec(*values[3:]))


def joint_state(stamp_ns: int, names: list[str], positions: list[float]) -> object:
    empty = np.zeros(0)
    return T["sensor_msgs/msg/JointState"](header(stamp_ns), names, np.array(positions), empty, empty)


def pose(stamp_ns: int, values: list[float]) -> object:
    point, quat = T["geometry_msgs/msg/Point"](*values[:3]), T["geometry_msgs/msg/Quaternion"](*values[3:])
    body = T["geometry_msgs/msg/Pose"](position=point, orientation=quat)
    return T["geometry_msgs/msg/PoseStamped"](header=header(stamp_ns, "world"), pose=body)


def write_bag(path: Path, storage: str, messages: list[tuple[str, int, object]], topics: dict | None = None) -> Path:
    """Bag with a connection for each of ``topics`` and ``(topic, log_ns, msg)`` messages."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=TS)
            for topic, msgtype in (topics or TOPIC_TYPES).items()
        }
        for topic, log_ns, msg in messages:
            writer.write(connections[topic], log_ns, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def frame_messages(stamps_ms: list[int]) -> list[tuple[str, int, object]]:
    """Frame i stamped at ``stamps_ms[i]`` (header), logged (arriving) at ``i * 100 + 7`` ms."""
    return [
        (CAM, S0 + (i * 100 + 7) * MS, image(S0 + ms * MS, FRAMES[i % len(FRAMES)])) for i, ms in enumerate(stamps_ms)
    ]


def standard_messages() -> list[tuple[str, int, object]]:
    """Frames at 0..400 ms; twist at 50/250 ms (log time only); joints at 150/350 ms; poses at 100/300 ms."""
    return [
        *frame_messages([0, 100, 200, 300, 400]),
        (CMD_VEL, S0 + 50 * MS, twist(V1)),
        (CMD_VEL, S0 + 250 * MS, twist(V2)),
        (JOINT_TOPIC, S0 + 160 * MS, joint_state(S0 + 150 * MS, ["elbow", "shoulder"], [0.2, 0.1])),
        (JOINT_TOPIC, S0 + 360 * MS, joint_state(S0 + 350 * MS, ["shoulder", "elbow"], [0.3, 0.4])),
        (POSE_TOPIC, S0 + 300 * MS, pose(S0 + 100 * MS, P1)),  # arrives late; its stamp counts
        (POSE_TOPIC, S0 + 310 * MS, pose(S0 + 300 * MS, P2)),
        ("/robot1/status", S0, T["std_msgs/msg/String"](data="ok")),
    ]


def read(path: Path, **kwargs) -> object:
    options = {"image_topic": CAM, "action_topics": ACTION_TOPICS, "joint_names": JOINTS} | kwargs
    return read_episode(path, **options)


def assert_actions(actions: dict, expected: dict) -> None:
    assert set(actions) == set(expected)
    for modality, rows in expected.items():
        assert actions[modality].dtype == np.float32
        np.testing.assert_array_equal(actions[modality], np.array(rows, dtype=np.float32), err_msg=modality)


STANDARD_ACTIONS = {
    "twist": [ZERO6, V1, V1, V2, V2],
    "joints": [[0.1, 0.2]] * 4 + [[0.3, 0.4]],  # before the first sample: the first sample
    "camera_pose": [P1, P1, P1, P2, P2],  # before the first sample: the first sample
}


# --- reading ------------------------------------------------------------------------------------


@STORAGES
def test_read_episode_aligns_actions_to_frame_stamps(tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "bag", storage, standard_messages())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        episode = read(bag)
    np.testing.assert_array_equal(episode.frames, FRAMES)
    assert episode.frames.dtype == np.uint8
    assert episode.frame_times_ns.dtype == np.int64
    assert episode.frame_times_ns.tolist() == [S0 + ms * MS for ms in (0, 100, 200, 300, 400)]
    assert_actions(episode.actions, STANDARD_ACTIONS)
    assert episode.skipped == {}
    assert episode.source == str(bag)


@STORAGES
def test_single_storage_file_is_readable(tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "bag", storage, standard_messages())
    (storage_file,) = bag.glob("*.mcap" if storage == "mcap" else "*.db3")
    episode = read(storage_file)
    np.testing.assert_array_equal(episode.frames, FRAMES)
    assert_actions(episode.actions, STANDARD_ACTIONS)


def test_log_clock_uses_receive_times(tmp_path: Path) -> None:
    episode = read(write_bag(tmp_path / "bag", "mcap", standard_messages()), clock="log")
    assert episode.frame_times_ns.tolist() == [S0 + ms * MS for ms in (7, 107, 207, 307, 407)]
    # poses now count at 300 and 310 ms, when they were logged
    assert_actions({"camera_pose": episode.actions["camera_pose"]}, {"camera_pose": [P1] * 4 + [P2]})


def test_zero_header_stamp_falls_back_to_log_time(tmp_path: Path) -> None:
    messages = [(CAM, S0 + i * 100 * MS, image(0, FRAMES[i])) for i in range(3)] + [(CMD_VEL, S0, twist(V1))]
    episode = read_episode(write_bag(tmp_path / "bag", "mcap", messages), CAM, {"twist": CMD_VEL})
    assert episode.frame_times_ns.tolist() == [S0, S0 + 100 * MS, S0 + 200 * MS]
    assert_actions(episode.actions, {"twist": [V1] * 3})


def test_disjoint_clocks_are_warned_about(tmp_path: Path) -> None:
    # sim-time header stamps on the frames, wall-clock log times on the header-less Twist
    messages = [*frame_messages([0, 100]), (CMD_VEL, 1_700_000_000 * 10**9, twist(V1))]
    bag = write_bag(tmp_path / "bag", "mcap", messages)
    with pytest.warns(UserWarning, match=r"'/robot1/cmd_vel' spans .* disjoint from the frames'.*clock='log'"):
        assert_actions(read_episode(bag, CAM, {"twist": CMD_VEL}).actions, {"twist": [ZERO6, ZERO6]})


def test_frames_only_episode(tmp_path: Path) -> None:
    episode = read_episode(write_bag(tmp_path / "bag", "sqlite3", standard_messages()), CAM, {})
    assert episode.actions == {} and len(episode.frames) == 5


@STORAGES
def test_nan_actions_are_skipped_and_counted(tmp_path: Path, storage: str) -> None:
    messages = [*standard_messages(), (CMD_VEL, S0 + 150 * MS, twist([0.0, math.nan, 0, 0, 0, 0]))]
    messages.append((JOINT_TOPIC, S0 + 370 * MS, joint_state(S0 + 370 * MS, ["shoulder", "wrist"], [0.0, 0.0])))
    with pytest.warns(UserWarning) as record:
        episode = read(write_bag(tmp_path / "bag", storage, messages))
    assert sorted(str(w.message).split(": skipped ")[1] for w in record) == [
        f"1 message(s) on {JOINT_TOPIC}:invalid; first: JointState joints do not match the expected "
        "['shoulder', 'elbow']: missing ['elbow'], unknown ['wrist']",
        f"1 message(s) on {CMD_VEL}:invalid; first: twist has non-finite values: linear.y=nan",
    ]
    assert episode.skipped == {f"{CMD_VEL}:invalid": 1, f"{JOINT_TOPIC}:invalid": 1}
    assert_actions(episode.actions, STANDARD_ACTIONS)


def test_undecodable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    messages = standard_messages()
    messages[2] = (CAM, messages[2][1], image(S0 + 200 * MS, FRAMES[2], encoding="yuv422"))
    with pytest.warns(UserWarning, match="image_raw:undecodable.*'yuv422' is not supported"):
        episode = read(write_bag(tmp_path / "bag", "mcap", messages))
    assert episode.skipped == {f"{CAM}:undecodable": 1}
    np.testing.assert_array_equal(episode.frames, FRAMES[[0, 1, 3, 4]])
    assert_actions(episode.actions, {k: [v[i] for i in (0, 1, 3, 4)] for k, v in STANDARD_ACTIONS.items()})


@pytest.mark.parametrize(
    ("stamps_ms", "kept"),
    [
        ([0, 100, 200, 150, 300, 400], [0, 1, 2, 4, 5]),  # one frame stamped backwards
        ([0, 100, 9000, 200, 300, 400], [0, 1, 3, 4, 5]),  # one stamp glitched far ahead
        ([0, 100, 100, 200], [0, 1, 3]),  # a repeated stamp keeps the first frame
    ],
)
def test_out_of_order_frames_are_skipped(tmp_path: Path, stamps_ms: list[int], kept: list[int]) -> None:
    messages = [*frame_messages(stamps_ms), (CMD_VEL, S0, twist(V1))]
    bag = write_bag(tmp_path / "bag", "sqlite3", messages)
    with pytest.warns(UserWarning, match="image_raw:out_of_order; first: decoded frame"):
        episode = read_episode(bag, CAM, {"twist": CMD_VEL})
    assert episode.skipped == {f"{CAM}:out_of_order": len(stamps_ms) - len(kept)}
    assert episode.frame_times_ns.tolist() == [S0 + stamps_ms[i] * MS for i in kept]
    np.testing.assert_array_equal(episode.frames, FRAMES[[i % len(FRAMES) for i in kept]])


def test_half_bad_frames_is_still_usable_but_more_is_refused(tmp_path: Path) -> None:
    half = write_bag(tmp_path / "half", "mcap", frame_messages([0, 100, 50, 40]))
    with pytest.warns(UserWarning):
        assert len(read_episode(half, CAM, {}).frames) == 2
    bad = write_bag(tmp_path / "bad", "mcap", frame_messages([500, 400, 300, 200, 100]))
    with pytest.raises(
        BagError,
        match=rf"{bad}.*only 1 of 5 frames are usable.*4 out of order, first: decoded "
        rf"frame 1 stamped {S0 + 400 * MS} ns is not after frame 0 stamped {S0 + 500 * MS} ns",
    ):
        read_episode(bad, CAM, {})


def test_wrong_frame_size_is_refused(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "mcap", standard_messages())
    np.testing.assert_array_equal(read(bag, frame_size=(4, 6)).frames, FRAMES)
    with pytest.raises(BagError, match=r"only 0 of 5 frames are usable \(5 undecodable.*expected size 6x4"):
        read(bag, frame_size=(6, 4))


def test_action_topic_without_usable_messages_is_refused(tmp_path: Path) -> None:
    messages = [*frame_messages([0, 100]), (CMD_VEL, S0, twist([math.inf] * 6))]
    bag = write_bag(tmp_path / "bag", "mcap", messages)
    with pytest.raises(BagError, match=r"/robot1/cmd_vel' \(twist\) has no usable messages \(1 messages; first error"):
        read_episode(bag, CAM, {"twist": CMD_VEL})


def test_missing_topic_lists_the_available_ones(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "mcap", standard_messages())
    with pytest.raises(
        BagError,
        match=rf"bag {bag}: topic '/cmd_vel' not found; available topics: .*"
        r"/robot1/cmd_vel \(geometry_msgs/msg/Twist\)",
    ):
        read_episode(bag, CAM, {"twist": "/cmd_vel"})
    with pytest.raises(BagError, match="topic '/camera/image_raw' not found"):
        read_episode(bag, "/camera/image_raw", {})


def test_wrong_message_type_says_expected_and_found(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "sqlite3", standard_messages())
    with pytest.raises(
        BagError,
        match=r"topic '/robot1/camera_pose' has type geometry_msgs/msg/PoseStamped, "
        r"expected geometry_msgs/msg/Twist or geometry_msgs/msg/TwistStamped",
    ):
        read_episode(bag, CAM, {"twist": POSE_TOPIC})
    with pytest.raises(BagError, match=r"has type geometry_msgs/msg/Twist, expected sensor_msgs/msg/Image"):
        read_episode(bag, CMD_VEL, {})


@STORAGES
def test_empty_image_topic_is_refused(tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "bag", storage, [(CMD_VEL, S0, twist(V1))])
    with pytest.raises(BagError, match=rf"bag {bag}: image topic '{CAM}' has no messages"):
        read_episode(bag, CAM, {"twist": CMD_VEL})


def test_missing_and_unreadable_bags_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=rf"bag {tmp_path / 'nope'} does not exist"):
        read_episode(tmp_path / "nope", CAM, {})
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not a bag")
    with pytest.raises(BagError, match=rf"cannot read bag {garbage}"):
        read_episode(garbage, CAM, {})
    with pytest.raises(BagError, match=rf"cannot read bag {tmp_path}"):  # a folder without metadata.yaml
        read_episode(tmp_path, CAM, {})


def test_invalid_read_requests_are_refused(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "mcap", standard_messages())
    with pytest.raises(ValueError, match="joint_names"):
        read_episode(bag, CAM, {"joints": JOINT_TOPIC})
    with pytest.raises(ValueError, match=r"unknown action modalities \['gripper'\]"):
        read_episode(bag, CAM, {"gripper": CMD_VEL})
    with pytest.raises(ValueError, match="distinct"):
        read_episode(bag, CAM, {"twist": CAM})
    with pytest.raises(ValueError, match="clock"):
        read_episode(bag, CAM, {}, clock="wall")


# --- writing ------------------------------------------------------------------------------------


@STORAGES
def test_episode_writer_round_trip(tmp_path: Path, storage: str) -> None:
    bag = tmp_path / "episode"
    with EpisodeWriter(bag, storage=storage, image_topic=CAM, action_topics=ACTION_TOPICS, joint_names=JOINTS) as w:
        w.write_action("joints", S0, [0.1, 0.2])
        for i, frame in enumerate(FRAMES):
            t = S0 + i * 100 * MS
            w.write_action("twist", t, V1 if i < 3 else V2)
            w.write_action("camera_pose", t + 50 * MS, P1 if i < 2 else P2)
            w.write_frame(t, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        episode = read(bag)
    np.testing.assert_array_equal(episode.frames, FRAMES)
    assert episode.frame_times_ns.tolist() == [S0 + i * 100 * MS for i in range(5)]
    assert_actions(
        episode.actions,
        {
            "twist": [V1] * 3 + [V2] * 2,
            "joints": [[0.1, 0.2]] * 5,
            "camera_pose": [P1, P1, P1, P2, P2],
        },
    )
    with AnyReader([bag]) as reader:
        for connection, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if hasattr(msg, "header"):
                assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == log_ns
    assert read(bag, clock="log").frame_times_ns.tolist() == episode.frame_times_ns.tolist()


def test_write_episode_round_trip(tmp_path: Path) -> None:
    times = [S0 + i * 100 * MS for i in range(5)]
    actions = {"twist": ([S0 + 50 * MS, S0 + 250 * MS], [V1, V2])}
    bag = write_episode(tmp_path / "ep", FRAMES, times, actions, storage="sqlite3")
    episode = read_episode(bag, "/camera/image_raw", {"twist": "/cmd_vel"})
    np.testing.assert_array_equal(episode.frames, FRAMES)
    assert episode.frame_times_ns.tolist() == times
    assert_actions(episode.actions, {"twist": STANDARD_ACTIONS["twist"]})


def test_episode_writer_refuses_bad_input(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path / "ep", action_topics={"twist": CMD_VEL}) as writer:
        writer.write_frame(S0, FRAMES[0])
        with pytest.raises(BagError, match=rf"frame at {S0} ns is not after the previous one at {S0} ns"):
            writer.write_frame(S0, FRAMES[1])
        with pytest.raises(BagError, match=r"frame size \(2, 6\) differs"):
            writer.write_frame(S0 + 1, FRAMES[0][:2])
        with pytest.raises(ActionConversionError, match="non-finite"):
            writer.write_action("twist", S0, [math.nan] * 6)
        with pytest.raises(BagError, match="no topic configured for action modality 'joints'"):
            writer.write_action("joints", S0, [0.0])
    assert len(read_episode(tmp_path / "ep", "/camera/image_raw", {}).frames) == 1
    with pytest.raises(BagError, match="exists already"):
        EpisodeWriter(tmp_path / "ep", action_topics={}).open()
    with pytest.raises(ValueError, match="joint_names"):
        EpisodeWriter(tmp_path / "ep2", action_topics={"joints": JOINT_TOPIC})


def test_episode_writer_aborts_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), EpisodeWriter(tmp_path / "ep", action_topics={}) as writer:
        writer.write_frame(S0, FRAMES[0])
        raise RuntimeError("simulated crash")
    assert not (tmp_path / "ep" / "metadata.yaml").exists()


def test_modules_import_neither_rclpy_nor_torch() -> None:
    code = (
        "import sys, astra_ros.bags, astra_ros.image_conversion, astra_ros.action_conversion;"
        "import astra_ros.resample;"
        "bad = [m for m in ('rclpy', 'torch', 'cv_bridge') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- zero-order hold ----------------------------------------------------------------------------


def test_zero_order_hold_exact_numbers() -> None:
    hold = ZeroOrderHold(neutral=[0.0, 0.0])
    assert hold.sample(5).tolist() == [0.0, 0.0] and hold.last_stamp_ns is None  # nothing yet
    hold.push(10, [1.0, 2.0])
    hold.push(20, [3.0, 4.0])
    hold.push(20, [5.0, 6.0])  # equal stamp: the later sample wins
    assert [hold.sample(t).tolist() for t in (9, 10, 19, 20, 1000)] == [
        [0.0, 0.0],
        [1.0, 2.0],
        [1.0, 2.0],
        [5.0, 6.0],
        [5.0, 6.0],
    ]
    hold.sample(10)[0] = 99.0  # callers get copies
    assert hold.sample(10).tolist() == [1.0, 2.0]


def test_zero_order_hold_timeout() -> None:
    hold = ZeroOrderHold(neutral=[0.0], timeout_ns=100)
    hold.push(1000, [7.0])
    assert [hold.sample(t).tolist() for t in (999, 1000, 1100, 1101)] == [[0.0], [7.0], [7.0], [0.0]]


def test_zero_order_hold_out_of_order_leaves_state_unchanged() -> None:
    hold = ZeroOrderHold(neutral=[0.0])
    hold.push(50, [1.0])
    with pytest.raises(OutOfOrderError, match="sample stamped 40 ns arrived after one stamped 50 ns"):
        hold.push(40, [2.0])
    assert hold.last_stamp_ns == 50 and hold.sample(45).tolist() == [0.0] and hold.sample(60).tolist() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        hold.push(60, [1.0, 2.0])
    assert hold.last_stamp_ns == 50


def test_zero_order_hold_keeps_bounded_history() -> None:
    hold = ZeroOrderHold(neutral=[0.0], max_history=2)
    for t in (10, 20, 30):
        hold.push(t, [float(t)])
    assert [hold.sample(t).tolist() for t in (15, 25, 35)] == [[0.0], [20.0], [30.0]]


def test_zoh_resample_exact_numbers_and_timeout() -> None:
    times = [10, 20, 20, 40]
    values = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    queries = [0, 10, 15, 20, 39, 40, 100]
    out = zoh_resample(times, values, queries, neutral=[-1.0])
    assert out.dtype == np.float32
    assert out[:, 0].tolist() == [-1.0, 1.0, 1.0, 3.0, 3.0, 4.0, 4.0]
    timed = zoh_resample(times, values, queries, neutral=[-1.0], timeout_ns=19)
    assert timed[:, 0].tolist() == [-1.0, 1.0, 1.0, 3.0, 3.0, 4.0, -1.0]
    assert zoh_resample(times, values, [39], neutral=[-1.0], timeout_ns=18)[:, 0].tolist() == [-1.0]


def test_zoh_resample_edge_cases() -> None:
    empty = zoh_resample(np.zeros(0, np.int64), np.zeros((0, 2)), [1, 2], neutral=[0.0, 1.0], timeout_ns=5)
    assert empty.tolist() == [[0.0, 1.0], [0.0, 1.0]]
    with pytest.raises(OutOfOrderError, match="sample 2 is stamped 15 ns, before sample 1 stamped 20 ns"):
        zoh_resample([10, 20, 15], np.zeros((3, 1)), [0], neutral=[0.0])
    with pytest.raises(ValueError, match=r"values must be \[2, 1\]"):
        zoh_resample([10, 20], np.zeros((2, 2)), [0], neutral=[0.0])
