"""ament_python package definition: the same tree installs with pip and builds with colcon."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "astra_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["astra_model", "astra_model.*", "astra_ros", "astra_ros.*"]),
    package_data={PACKAGE: ["demo_model/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="Astra-ROS maintainers",
    maintainer_email="maintainers@astra-ros.dev",
    description="Astra action-conditioned video world model as a learned simulator for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "astra-rollout = astra_ros.rollout_cli:main",
            "astra-world-model = astra_ros.world_model_node:main",
            "astra-planner = astra_ros.planner_node:main",
            "world_model_node = astra_ros.world_model_node:main",
            "astra-eval = astra_ros.bag_eval:main",
            "astra-bag-play = astra_ros.bag_play:main",
            "astra-datagen = astra_ros.datagen:main",
            "astra-train = astra_ros.train:main",
        ],
    },
)
