"""Launch the world-model node and the planner beside it: the planner drives the model, in imagination.

    ros2 launch astra_ros planner.launch.py
    ros2 action send_goal /astra_planner/reach_image astra_msgs/action/ReachImage "{goal_image: ..., max_steps: 48}"

Both use their default topic names, so the planner reads the model's ``image`` and publishes its
``cmd_vel`` (or ``joint_command``/``camera_pose_cmd`` with ``modality``). To drive a real robot instead,
start the planner alone and remap ``image`` and the command topic to the robot's.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("astra_ros"), "config", "world_model.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file", default_value=default_params, description="parameter file of the world-model node"
            ),
            DeclareLaunchArgument("modality", default_value="twist", description="the modality the planner commands"),
            Node(
                package="astra_ros",
                executable="world_model_node",
                name="world_model_node",
                output="screen",
                parameters=[LaunchConfiguration("params_file")],
            ),
            Node(
                package="astra_ros",
                executable="astra-planner",
                name="astra_planner",
                output="screen",
                parameters=[{"modality": LaunchConfiguration("modality")}],
            ),
        ]
    )
