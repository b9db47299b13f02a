"""`astra-planner` in process with rclpy (goals accepted, refused, executed through the action), its
launch file, and `python -m astra_ros.plan_eval` end to end on one short episode."""

from __future__ import annotations

import ast
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import torch
from astra_msgs.action import ReachImage
from conftest import randomise_action_path, tiny_config
from geometry_msgs.msg import Twist
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from astra_model import AstraWorldModel
from astra_ros import plan_eval
from astra_ros.image_conversion import rgb_to_image_msg
from astra_ros.node_params import StartupError
from astra_ros.planner_node import PlannerNode

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
TIMEOUT_S = 60.0
FAST = {"candidates": 3, "iterations": 1, "elites": 1, "frame_rate": 50.0, "num_threads": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(sampler={"steps": 2, "shift": 3.0, "guidance_scale": 0.0})).eval()
    randomise_action_path(model)
    model.seed_frame = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("tiny-planner")
    model.save_pretrained(path)
    return path


class Probe(Node):
    """Plays the robot: publishes camera frames, records the planner's commands, sends goals."""

    def __init__(self, context: Context) -> None:
        super().__init__("planner_probe", context=context)
        self.camera = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.commands: list[Twist] = []
        self.create_subscription(Twist, "cmd_vel", self.commands.append, 10)
        self.client = ActionClient(self, ReachImage, "/astra_planner/reach_image")


@pytest.fixture(scope="module")
def ros(checkpoint: Path):
    context = Context()
    rclpy.init(context=context, domain_id=1 + os.getpid() % 90)
    params = [Parameter(k, value=v) for k, v in {"checkpoint": str(checkpoint), **FAST}.items()]
    planner = PlannerNode(context=context, parameter_overrides=params)
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    for node in (planner, probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    stop = threading.Event()

    def camera() -> None:  # a steady 20 Hz camera
        frame = np.random.default_rng(2).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        while not stop.wait(0.05):
            probe.camera.publish(rgb_to_image_msg(frame, Image))

    threading.Thread(target=camera, daemon=True).start()
    yield planner, probe
    stop.set()
    executor.shutdown()
    planner.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown(context=context)


def send(probe: Probe, goal: ReachImage.Goal) -> tuple[Any, list[ReachImage.Feedback]]:
    """The goal handle once the server answered, and the feedback that arrives."""
    assert probe.client.wait_for_server(timeout_sec=TIMEOUT_S)
    feedback: list[ReachImage.Feedback] = []
    future = probe.client.send_goal_async(goal, feedback_callback=lambda msg: feedback.append(msg.feedback))
    deadline = time.monotonic() + TIMEOUT_S
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return future.result(), feedback


def goal_image(size: int = SIZE, encoding: str = "rgb8") -> Image:
    msg = rgb_to_image_msg(np.random.default_rng(3).integers(0, 255, (size, size, 3), dtype=np.uint8), Image)
    msg.encoding = encoding
    return msg


def test_a_goal_is_planned_for_and_answered(ros) -> None:
    _, probe = ros
    handle, feedback = send(probe, ReachImage.Goal(goal_image=goal_image(), tolerance=1e-9, max_steps=8))
    assert handle.accepted
    result_future = handle.get_result_async()
    deadline = time.monotonic() + TIMEOUT_S
    while not result_future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = result_future.result().result
    assert not result.reached and result.steps == 8 and result.final_cost > 0  # a tolerance it cannot meet
    assert "not reached after 8 commands" in result.message
    assert len(feedback) == 1 and feedback[0].replans == 1 and feedback[0].best_predicted_cost > 0
    predicted = feedback[0].predicted_last_frame
    assert (predicted.height, predicted.width, predicted.encoding) == (SIZE, SIZE, "rgb8")
    assert len(probe.commands) >= 8, "the first chunk of the plan was published"


@pytest.mark.parametrize(("image", "why"), [(goal_image(encoding="mono16"), "encoding"), (goal_image(16), "size")])
def test_a_bad_goal_is_rejected(ros, image: Image, why: str) -> None:
    _, probe = ros
    handle, _ = send(probe, ReachImage.Goal(goal_image=image))
    assert not handle.accepted, why


def test_a_modality_the_model_lacks_stops_the_planner(checkpoint: Path) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=1 + (os.getpid() + 7) % 90)
    try:
        params = [Parameter("checkpoint", value=str(checkpoint)), Parameter("modality", value="gripper")]
        with pytest.raises(StartupError, match="modality 'gripper'"):
            PlannerNode(context=context, parameter_overrides=params)
    finally:
        rclpy.try_shutdown(context=context)


def test_a_joint_goal_needs_the_command_in_force(checkpoint: Path) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=1 + (os.getpid() + 11) % 90)
    try:
        params = [Parameter(k, value=v) for k, v in {"checkpoint": str(checkpoint), "modality": "joints"}.items()]
        planner = PlannerNode(context=context, parameter_overrides=params)
        assert "command in force is unknown" in planner._goal_problem(ReachImage.Goal(goal_image=goal_image()))
        planner.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_the_planner_launch_file_starts_both_nodes() -> None:
    tree = ast.parse((REPO / "launch" / "planner.launch.py").read_text())
    executables = {
        ast.literal_eval(kw.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node"
        for kw in node.keywords
        if kw.arg == "executable"
    }
    setup = (REPO / "setup.py").read_text()
    assert executables == {"world_model_node", "astra-planner"}
    assert all(f'"{name} = astra_ros.' in setup for name in executables)


def test_plan_eval_runs_end_to_end_on_one_short_episode(checkpoint: Path, tmp_path: Path) -> None:
    argv = ["--world", "mobile", "--episodes", "1", "--chunks", "1", "--candidates", "2", "--iterations", "1"]
    plan_eval.main([*argv, "--elites", "1", "--checkpoint", str(checkpoint), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "plan_eval.json").read_text())
    for name in ("model", "oracle", "random", "hold"):
        assert result[name]["episodes"] == 1 and 0.0 <= result[name]["success_rate"] <= 1.0
        assert result[name]["median_final_error"] >= 0 and result[name]["seconds_per_replan"] >= 0
    assert result["model"]["seconds_per_replan"] > 0 and result["hold"]["seconds_per_replan"] == 0
    assert (tmp_path / "plan_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
