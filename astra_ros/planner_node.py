"""`astra-planner`: drive a robot to a goal image by model-predictive planning on the world model.

It serves the action ``~/reach_image`` (astra_msgs/ReachImage). Per goal it loops: take the camera's
latest frames (``image``), stop when the latest is within the goal's tolerance of the goal image (the
pooled latent distance `astra_model.planner.latent_mse`, as the planner scores), else start the world
model from those frames, replan (`astra_model.planner.Planner`, warm-started from the last plan) and
publish the plan's first chunk on the modality's command topic (``cmd_vel``, ``joint_command`` or
``camera_pose_cmd``), one command per frame period. Feedback after each replan gives the best plan's
predicted cost, the current cost, the replans done and the predicted last frame.

Pointed at a real robot's topics it drives the robot; beside the world-model node
(``launch/planner.launch.py``) it drives the model itself, closed entirely inside imagination. The robot
holds still while the planner thinks: the twist times out to zero and joint and pose targets hold.

Joint targets and camera poses are planned as bounded steps from the command in force, which the node
takes from its own command topic (whoever published last) or, before any, from ``initial_command``;
a goal that needs it and has neither is refused. Command limits default to the demo worlds' documented
ones (`astra_ros.demo_worlds`); set ``command_low``, ``command_high`` and ``command_step`` for a real
robot's. The model loads in-process from ``checkpoint`` (empty: the shipped demo model).

    astra-planner --ros-args -p modality:=twist -r image:=/camera/image_raw
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np
from astra_msgs.action import ReachImage
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import Executor, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from astra_model.command_space import CommandSpace, absolute, increments, pose_increments
from astra_model.planner import Planner, PlannerConfig, encode_frame, latent_mse
from astra_ros import node_params
from astra_ros.action_conversion import COMMAND_TOPICS, ActionConversionError, action_to_msg, msg_to_action
from astra_ros.demo_worlds import command_space
from astra_ros.image_conversion import ImageConversionError, image_msg_to_rgb, rgb_to_image_msg
from astra_ros.node_main import run_node
from astra_ros.node_params import ParamSpec, StartupError

NODE_NAME = "astra_planner"
MSG_TYPES: dict[str, type] = {"twist": Twist, "joints": JointState, "camera_pose": PoseStamped}
DEMO_WORLD = {"twist": "mobile", "joints": "arm", "camera_pose": "camera"}
GOAL_ENCODINGS = ("rgb8", "bgr8")
FRAME_WAIT_S = 10.0
STOP_WAIT_S = 10.0

_DEFAULTS = PlannerConfig()
PLANNER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("modality", "twist", "the modality planned and published", read_only=True),
    ParamSpec("frame_rate", 10.0, "commands published per second", read_only=True, float_range=(0.1, 240.0)),
    ParamSpec("tolerance", 0.3, "default goal tolerance: latent distance to the goal", float_range=(0.0, 1e6)),
    ParamSpec("max_steps", 48, "default most commands per goal", int_range=(1, 1_000_000, 0)),
    ParamSpec("history_frames", 9, "camera frames the model is started from at each replan", int_range=(1, 64, 0)),
    ParamSpec("method", _DEFAULTS.method, "planning method", choices=("cem", "mppi")),
    ParamSpec("horizon_chunks", _DEFAULTS.horizon_chunks, "planning horizon in chunks", int_range=(1, 16, 0)),
    ParamSpec("candidates", _DEFAULTS.candidates, "candidates per iteration", int_range=(1, 4096, 0)),
    ParamSpec("iterations", _DEFAULTS.iterations, "refinements per replan", int_range=(1, 100, 0)),
    ParamSpec("elites", _DEFAULTS.elites, "candidates CEM keeps (<= candidates)", int_range=(1, 4096, 0)),
    ParamSpec("frames_per_knot", _DEFAULTS.frames_per_knot, "frames a planned command is held", int_range=(1, 64, 0)),
    ParamSpec("max_batch", _DEFAULTS.max_batch, "candidates rolled out at once (memory)", int_range=(1, 4096, 0)),
    ParamSpec("cost_frames", _DEFAULTS.cost_frames, "last frames a candidate is scored on", int_range=(1, 64, 0)),
    ParamSpec("cost_pool", _DEFAULTS.cost_pool, "latent cells pooled per side before scoring", int_range=(1, 16, 0)),
    ParamSpec("time_budget", 0.0, "seconds a replan may take; 0: no limit", float_range=(0.0, 3600.0)),
    ParamSpec("seed", 0, "seed of the planner's sampling", int_range=(0, node_params.MAX_SEED, 0)),
    ParamSpec(
        "command_low",
        [0.0],
        "absolute command limits, low (twist and joints: per element; camera_pose: position x, y, z); "
        "[0.0] (a single zero): the demo world's",
        read_only=True,
    ),
    ParamSpec("command_high", [0.0], "absolute command limits, high; as command_low", read_only=True),
    ParamSpec(
        "command_step",
        [0.0],
        "most change per frame (joints: per joint; camera_pose: 3 translations in m, 3 rotation-vector "
        "components in rad); [0.0]: the demo world's",
        read_only=True,
    ),
    ParamSpec("initial_command", [0.0], "the command in force before any is seen on the command topic; [0.0]: none"),
)


def _given(values: list[float]) -> np.ndarray | None:
    """A list parameter's value, or None for its `[0.0]` default (ROS list parameters cannot be empty)."""
    return None if list(values) == [0.0] else np.asarray(values, np.float64)


class PlannerNode(Node):
    """The ``~/reach_image`` action server; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        node_params.declare(self, (*node_params.LOAD_PARAMS, *PLANNER_PARAMS))
        self.checkpoint, self.model = node_params.load_model(self)
        self.modality = self._param("modality")
        if self.modality not in self.model.config.modalities or self.modality not in COMMAND_TOPICS:
            raise StartupError(
                f"modality {self.modality!r}: {self.checkpoint} takes {sorted(self.model.config.modalities)}; "
                f"the planner publishes {sorted(COMMAND_TOPICS)}"
            )
        self.space = self._command_space()
        self.joint_names = list(self.model.config.action_labels.get("joints", [])) or None
        self.frame_size = self._frame_size()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._executing = 0  # goals whose result is not out yet
        self._frames: list[np.ndarray] = []
        self._in_force = _given(self._param("initial_command"))
        self._publisher = self.create_publisher(MSG_TYPES[self.modality], COMMAND_TOPICS[self.modality], 10)
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data, callback_group=inputs)
        self.create_subscription(
            MSG_TYPES[self.modality], COMMAND_TOPICS[self.modality], self._on_command, 10, callback_group=inputs
        )
        self._server = ActionServer(
            self,
            ReachImage,
            "~/reach_image",
            execute_callback=self._execute,
            goal_callback=self._check_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info(
            f"planning {self.modality} on {self.checkpoint}: publishes {COMMAND_TOPICS[self.modality]}, "
            f"reads image ({self.frame_size[0]}x{self.frame_size[1]})"
        )

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _command_space(self) -> CommandSpace:
        demo = command_space(DEMO_WORLD[self.modality])
        low, high, step = (_given(self._param(f"command_{name}")) for name in ("low", "high", "step"))
        try:
            if self.modality == "twist":
                return absolute(demo.low if low is None else low, demo.high if high is None else high)
            if low is None and high is None and step is None:
                return demo
            if self.modality == "joints":
                return increments(step, low, high)
            return pose_increments(step[:3], step[3:], low, high)
        except (ValueError, TypeError, IndexError) as err:
            raise StartupError(
                f"command_low, command_high and command_step do not describe {self.modality} limits "
                f"(give all three for joints and camera_pose): {err}"
            ) from err

    def _frame_size(self) -> tuple[int, int]:
        if self.model.seed_frame is not None:
            return self.model.seed_frame.shape[:2]
        return (64, 64)

    def _config(self) -> PlannerConfig:
        budget = self._param("time_budget")
        names = (
            "method",
            "horizon_chunks",
            "candidates",
            "iterations",
            "elites",
            "frames_per_knot",
            "max_batch",
            "cost_frames",
            "cost_pool",
        )
        settings = {name: self._param(name) for name in names}
        return PlannerConfig(**settings, time_budget_s=budget or None, seed=self._param("seed"))

    def stop_serving(self, executor: Executor) -> None:
        """End the goals in progress (aborted, with a message) and spin until their results are out."""
        self._stopping.set()
        deadline = time.monotonic() + STOP_WAIT_S
        while self._server._goal_handles and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)

    # -- inputs ------------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            frame = image_msg_to_rgb(msg, expected_size=self.frame_size)
        except ImageConversionError as err:
            self.get_logger().warning(f"camera frame ignored: {err}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._frames = [*self._frames, frame][-self._param("history_frames") :]

    def _on_command(self, msg: Any) -> None:
        try:
            self._in_force = msg_to_action(self.modality, msg, joint_names=self.joint_names).astype(np.float64)
        except ActionConversionError as err:
            self.get_logger().warning(f"command in force not understood: {err}", throttle_duration_sec=2.0)

    def _recent_frames(self) -> list[np.ndarray]:
        with self._lock:
            return list(self._frames)

    # -- action ------------------------------------------------------------------------------------
    def _check_goal(self, goal: ReachImage.Goal) -> GoalResponse:
        reason = self._goal_problem(goal)
        if reason:
            self.get_logger().warning(f"goal rejected: {reason}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _goal_problem(self, goal: ReachImage.Goal) -> str | None:
        image = goal.goal_image
        if image.encoding not in GOAL_ENCODINGS:
            return f"goal image encoding {image.encoding!r} is not accepted ({', '.join(GOAL_ENCODINGS)})"
        try:
            image_msg_to_rgb(image, expected_size=self.frame_size)
        except ImageConversionError as err:
            return str(err)
        if self.space.needs_current and self._in_force is None:
            return (
                f"the {self.modality} command in force is unknown: publish one on {COMMAND_TOPICS[self.modality]} "
                "or set initial_command"
            )
        return None

    def _execute(self, handle: ServerGoalHandle) -> ReachImage.Result:
        self._executing += 1
        try:
            return self._pursue(handle)
        finally:
            self._executing -= 1

    def _pursue(self, handle: ServerGoalHandle) -> ReachImage.Result:
        goal = image_msg_to_rgb(handle.request.goal_image, expected_size=self.frame_size)
        goal_latents = encode_frame(self.model, goal)
        tolerance = handle.request.tolerance or self._param("tolerance")
        max_steps = handle.request.max_steps or self._param("max_steps")
        config = self._config()
        planner = Planner(self.model, self.modality, self.space, config)
        result = ReachImage.Result()
        replans = 0
        while self.context.ok() and not self._stopping.is_set():
            frames = self._wait_for_frames()
            if not frames:
                result.message = "no camera frames arrive on image"
                handle.abort()
                return result
            latest = encode_frame(self.model, frames[-1])
            result.final_cost = float(latent_mse(latest, goal_latents, config.cost_pool)[0])
            if result.final_cost <= tolerance or result.steps >= max_steps or handle.is_cancel_requested:
                break
            plan = planner.plan(self.model.start(np.stack(frames)).snapshot(), goal, self._in_force)
            replans += 1
            handle.publish_feedback(self._feedback(plan, result.final_cost, replans))
            result.steps += self._publish(plan.commands[: self.model.config.frames_per_chunk], handle)
        result.reached = result.final_cost <= tolerance
        result.message = f"{'reached' if result.reached else 'not reached'} after {result.steps} commands"
        if self._stopping.is_set():
            result.message += ": the planner is shutting down"
        if handle.is_cancel_requested:
            handle.canceled()
        elif result.reached:
            handle.succeed()
        else:
            handle.abort()
        return result

    def _wait_for_frames(self) -> list[np.ndarray]:
        deadline = time.monotonic() + FRAME_WAIT_S
        while not (frames := self._recent_frames()) and time.monotonic() < deadline and self.context.ok():
            time.sleep(0.05)
        return frames

    def _feedback(self, plan: Any, current_cost: float, replans: int) -> ReachImage.Feedback:
        return ReachImage.Feedback(
            best_predicted_cost=float(plan.cost),
            current_cost=current_cost,
            replans=replans,
            predicted_last_frame=rgb_to_image_msg(plan.frames[-1], Image),
        )

    def _publish(self, commands: np.ndarray, handle: ServerGoalHandle) -> int:
        """Publish `commands` one per frame period; how many went out before a cancel."""
        period = 1.0 / self._param("frame_rate")
        start = time.monotonic()
        for k, command in enumerate(commands):
            if handle.is_cancel_requested or self._stopping.is_set():
                return k
            time.sleep(max(0.0, start + k * period - time.monotonic()))
            msg = action_to_msg(self.modality, command, MSG_TYPES[self.modality], joint_names=self.joint_names)
            if hasattr(msg, "header"):
                msg.header.stamp = self.get_clock().now().to_msg()
            self._publisher.publish(msg)
        return len(commands)


def main(args: list[str] | None = None) -> int:
    # Several threads: a goal's planning runs for seconds while the camera keeps arriving.
    return run_node(NODE_NAME, PlannerNode, lambda: MultiThreadedExecutor(num_threads=3), args)


if __name__ == "__main__":
    sys.exit(main())
