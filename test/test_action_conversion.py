"""ROS action messages <-> model action vectors, on rclpy and rosbags message objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped as RclpyPoseStamped
from geometry_msgs.msg import Twist as RclpyTwist
from geometry_msgs.msg import TwistStamped as RclpyTwistStamped
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image as RclpyImage
from sensor_msgs.msg import JointState as RclpyJointState

from astra_ros.action_conversion import (
    ActionConversionError,
    action_dim,
    action_to_msg,
    compose_pose,
    message_type_name,
    modality_for_type,
    msg_to_action,
    neutral_action,
    relative_pose,
)

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
TIME = T["builtin_interfaces/msg/Time"](sec=1, nanosec=2)
HEADER = T["std_msgs/msg/Header"](stamp=TIME, frame_id="base")
VEC3 = T["geometry_msgs/msg/Vector3"]
JOINTS = ["shoulder", "elbow", "wrist"]


def rclpy_twist(values: list[float]) -> RclpyTwist:
    msg = RclpyTwist()
    msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z = values
    return msg


def rosbags_twist(values: list[float]) -> object:
    return T["geometry_msgs/msg/Twist"](linear=VEC3(*values[:3]), angular=VEC3(*values[3:]))


def rclpy_joints(names: list[str], positions: list[float]) -> RclpyJointState:
    return RclpyJointState(name=names, position=positions)


def rosbags_joints(names: list[str], positions: list[float]) -> object:
    empty = np.zeros(0)
    return T["sensor_msgs/msg/JointState"](HEADER, names, np.array(positions, dtype=np.float64), empty, empty)


def rclpy_pose(values: list[float]) -> RclpyPoseStamped:
    msg = RclpyPoseStamped()
    position, q = msg.pose.position, msg.pose.orientation
    position.x, position.y, position.z, q.x, q.y, q.z, q.w = values
    return msg


def rosbags_pose(values: list[float]) -> object:
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](*values[:3]),
        orientation=T["geometry_msgs/msg/Quaternion"](*values[3:]),
    )
    return T["geometry_msgs/msg/PoseStamped"](header=HEADER, pose=pose)


TWISTS = pytest.mark.parametrize("make_twist", [rclpy_twist, rosbags_twist], ids=["rclpy", "rosbags"])
JOINT_STATES = pytest.mark.parametrize("make_joints", [rclpy_joints, rosbags_joints], ids=["rclpy", "rosbags"])
POSES = pytest.mark.parametrize("make_pose", [rclpy_pose, rosbags_pose], ids=["rclpy", "rosbags"])


@TWISTS
def test_twist_to_6d_action(make_twist) -> None:
    action = msg_to_action("twist", make_twist([0.5, -0.25, 0.0, 0.125, 1.0, -2.0]))
    assert action.dtype == np.float32
    assert action.tolist() == [0.5, -0.25, 0.0, 0.125, 1.0, -2.0]


def test_twist_stamped_is_accepted() -> None:
    msg = RclpyTwistStamped()
    msg.twist.linear.x, msg.twist.angular.z = 1.5, -0.5
    assert msg_to_action("twist", msg).tolist() == [1.5, 0, 0, 0, 0, -0.5]


@TWISTS
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_twist_non_finite_is_refused_naming_the_field(make_twist, bad: float) -> None:
    with pytest.raises(ActionConversionError, match=rf"twist has non-finite values: angular\.y={bad}"):
        msg_to_action("twist", make_twist([0, 0, 0, 0, bad, 0]))


@JOINT_STATES
def test_joints_are_matched_by_name(make_joints) -> None:
    msg = make_joints(["wrist", "shoulder", "elbow"], [3.0, 1.0, 2.0])
    action = msg_to_action("joints", msg, JOINTS)
    assert action.dtype == np.float32
    assert action.tolist() == [1.0, 2.0, 3.0]


@JOINT_STATES
@pytest.mark.parametrize(
    ("names", "positions", "match"),
    [
        (["shoulder", "elbow"], [1.0, 2.0], r"missing \['wrist'\], unknown \[\]"),
        (
            ["shoulder", "elbow", "wrist", "gripper"],
            [1.0, 2.0, 3.0, 4.0],
            r"missing \[\], unknown \['gripper'\]",
        ),
        (["shoulder", "elbow", "hand"], [1.0, 2.0, 3.0], r"missing \['wrist'\], unknown \['hand'\]"),
        (["shoulder", "elbow", "wrist"], [1.0, 2.0], "3 names but 2 positions"),
        (["shoulder", "elbow", "wrist"], [], "3 names but 0 positions"),
        (["shoulder", "shoulder", "wrist"], [1.0, 2.0, 3.0], "more than once"),
        (["wrist", "shoulder", "elbow"], [3.0, math.nan, 2.0], "non-finite values: shoulder=nan"),
        (["wrist", "shoulder", "elbow"], [math.inf, 1.0, 2.0], "non-finite values: wrist=inf"),
    ],
)
def test_bad_joint_states_are_refused(make_joints, names: list[str], positions: list[float], match: str) -> None:
    with pytest.raises(ActionConversionError, match=match):
        msg_to_action("joints", make_joints(names, positions), JOINTS)


@pytest.mark.parametrize(
    ("joint_names", "match"), [(None, "non-empty joint_names"), ([], "non-empty"), (["a", "a"], "duplicates")]
)
def test_joints_need_a_valid_joint_order(joint_names: list[str] | None, match: str) -> None:
    with pytest.raises(ActionConversionError, match=match):
        msg_to_action("joints", rclpy_joints(["a"], [1.0]), joint_names)


@POSES
def test_pose_to_7d_action_with_normalised_quaternion(make_pose) -> None:
    action = msg_to_action("camera_pose", make_pose([1.0, -2.0, 0.5, 1.5, 1.5, 1.5, 1.5]))
    assert action.dtype == np.float32
    assert action.tolist() == [1.0, -2.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert msg_to_action("camera_pose", make_pose([0, 0, 0, 0, 0, 0, -4.0])).tolist() == [
        0,
        0,
        0,
        0,
        0,
        0,
        -1,
    ]


@POSES
def test_bad_poses_are_refused(make_pose) -> None:
    with pytest.raises(ActionConversionError, match="zero-norm quaternion"):
        msg_to_action("camera_pose", make_pose([1, 2, 3, 0, 0, 0, 0]))
    with pytest.raises(ActionConversionError, match=r"position\.z=nan"):
        msg_to_action("camera_pose", make_pose([1, 2, math.nan, 0, 0, 0, 1]))


def test_neutral_actions() -> None:
    assert neutral_action("twist", 6).tolist() == [0.0] * 6
    assert neutral_action("camera_pose", 7).tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert neutral_action("joints", 3).tolist() == [0.0] * 3
    assert neutral_action("joints", 3).dtype == np.float32
    for modality, dim in [("twist", 7), ("camera_pose", 6), ("joints", 0)]:
        with pytest.raises(ActionConversionError, match=f"invalid dimension {dim} for {modality}"):
            neutral_action(modality, dim)
    with pytest.raises(ActionConversionError, match="unknown action modality 'gripper'"):
        neutral_action("gripper", 1)


def test_action_dims() -> None:
    assert (action_dim("twist"), action_dim("camera_pose"), action_dim("joints", JOINTS)) == (6, 7, 3)


@pytest.mark.parametrize(
    ("type_name", "modality"),
    [
        ("geometry_msgs/msg/Twist", "twist"),
        ("geometry_msgs/Twist", "twist"),
        ("geometry_msgs/msg/TwistStamped", "twist"),
        ("sensor_msgs/msg/JointState", "joints"),
        ("geometry_msgs/msg/PoseStamped", "camera_pose"),
        ("sensor_msgs/msg/Image", None),
        ("geometry_msgs/msg/Pose", None),
    ],
)
def test_modality_for_type(type_name: str, modality: str | None) -> None:
    assert modality_for_type(type_name) == modality


def test_message_type_name_of_rclpy_and_rosbags_messages() -> None:
    assert message_type_name(RclpyTwist()) == "geometry_msgs/msg/Twist"
    assert message_type_name(RclpyImage()) == "sensor_msgs/msg/Image"
    assert message_type_name(rosbags_twist([0] * 6)) == "geometry_msgs/msg/Twist"
    assert message_type_name(rosbags_pose([0] * 6 + [1])) == "geometry_msgs/msg/PoseStamped"


@pytest.mark.parametrize(
    ("modality", "vector", "classes"),
    [
        ("twist", [0.5, -0.25, 0.0, 0.125, 1.0, -2.0], (RclpyTwist, T["geometry_msgs/msg/Twist"])),
        ("joints", [0.25, -1.5, 3.0], (RclpyJointState, T["sensor_msgs/msg/JointState"])),
        ("camera_pose", [1, 2, 3, 0, 0, 0.6, 0.8], (RclpyPoseStamped, T["geometry_msgs/msg/PoseStamped"])),
    ],
)
def test_action_to_msg_round_trips_on_both_message_kinds(modality: str, vector: list[float], classes) -> None:
    for msg_type in classes:
        msg = action_to_msg(modality, vector, msg_type, stamp=7_000_000_001, frame_id="world", joint_names=JOINTS)
        assert isinstance(msg, msg_type)
        np.testing.assert_array_equal(msg_to_action(modality, msg, JOINTS), np.array(vector, dtype=np.float32))
        if modality != "twist":
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (7, 1, "world")
        if isinstance(msg, tuple(T.values())):
            TS.serialize_cdr(msg, msg.__msgtype__)  # a rosbags message must be serializable as built


def test_action_to_msg_refuses_bad_vectors() -> None:
    with pytest.raises(ActionConversionError, match=r"twist action must have shape \(6,\), got \(5,\)"):
        action_to_msg("twist", [0.0] * 5, RclpyTwist)
    with pytest.raises(ActionConversionError, match=r"elbow=nan"):
        action_to_msg("joints", [0.0, math.nan, 0.0], RclpyJointState, joint_names=JOINTS)
    with pytest.raises(ActionConversionError, match="zero-norm quaternion"):
        action_to_msg("camera_pose", [0.0] * 7, RclpyPoseStamped)


def quat_yaw(deg: float) -> list[float]:
    return Rotation.from_euler("z", deg, degrees=True).as_quat().tolist()


def test_relative_pose_exact_numbers() -> None:
    prev = [1.0, 0.0, 0.0, *quat_yaw(90)]
    cur = [1.0, 1.0, 0.0, *quat_yaw(90)]  # one metre along world +y = the camera's own +x
    np.testing.assert_allclose(relative_pose(prev, cur), [1, 0, 0, 0, 0, 0, 1], atol=1e-7)
    turned = [1.0, 0.0, 2.0, *quat_yaw(180)]
    np.testing.assert_allclose(relative_pose(prev, turned), [0, 0, 2, *quat_yaw(90)], atol=1e-7)
    identity = [0, 0, 0, 0, 0, 0, 1]
    np.testing.assert_allclose(relative_pose(identity, cur), cur, atol=1e-7)
    assert relative_pose(prev, prev).tolist() == identity
    assert relative_pose(prev, cur).dtype == np.float32


def test_compose_pose_inverts_relative_pose() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        prev = np.concatenate([rng.normal(size=3), Rotation.random(random_state=rng).as_quat()])
        cur = np.concatenate([rng.normal(size=3), Rotation.random(random_state=rng).as_quat(canonical=True)])
        np.testing.assert_allclose(compose_pose(prev, relative_pose(prev, cur)), cur, atol=1e-5)


def test_relative_pose_refuses_bad_poses() -> None:
    with pytest.raises(ActionConversionError, match="prev pose has a zero-norm quaternion"):
        relative_pose([0] * 7, [0, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ActionConversionError, match=r"cur pose must have shape \(7,\)"):
        relative_pose([0, 0, 0, 0, 0, 0, 1], [0] * 6)
    with pytest.raises(ActionConversionError, match=r"rel pose has non-finite values: position\.x=nan"):
        compose_pose([0, 0, 0, 0, 0, 0, 1], [math.nan, 0, 0, 0, 0, 0, 1])
