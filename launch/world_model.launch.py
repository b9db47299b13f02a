"""Launch the Astra world-model node with a parameter file and example remappings.

    ros2 launch astra_ros world_model.launch.py params_file:=/path/to/params.yaml

The remappings connect the node's relative topic names to a typical robot's; edit them to match yours.
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
            Node(
                package="astra_ros",
                executable="world_model_node",
                name="world_model_node",
                output="screen",
                parameters=[LaunchConfiguration("params_file")],
                remappings=[
                    ("cmd_vel", "/robot/cmd_vel"),
                    ("joint_command", "/robot/joint_command"),
                    ("image", "/camera/image_raw"),
                    ("camera_info", "/camera/camera_info"),
                ],
            ),
        ]
    )
