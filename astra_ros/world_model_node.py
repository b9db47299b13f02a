"""ROS 2 node that runs the Astra world model as a learned simulator.

Policies, teleop and bag players drive it with ordinary ROS messages; it publishes what the camera
would see. Run it with::

    python -m astra_ros.world_model_node --ros-args --params-file config/world_model.yaml

Topics (relative names, so they can be remapped):

- subscribes ``cmd_vel`` (geometry_msgs/Twist), ``joint_command`` (sensor_msgs/JointState, matched
  to the model's joints by name), ``camera_pose_cmd`` (geometry_msgs/PoseStamped, absolute pose),
  each only when the model has that action modality; ``seed_image`` (sensor_msgs/Image) restarts
  the rollout from a real frame of the rollout's size, keeping the commands in force.
- publishes ``image`` (rgb8) and ``camera_info`` stamped in model time, ``status``
  (astra_msgs/RolloutStatus), ``/diagnostics`` and, with ``publish_clock``, ``/clock``.

Services: ``~/reset`` (astra_msgs/Reset: a new episode, earlier commands are forgotten), ``~/pause``
and ``~/resume`` (std_srvs/Trigger: frames already computed stay queued), ``~/imagine``
(astra_msgs/Imagine: roll candidate action plans forward from a fork of the live state; a modality a
candidate leaves out is held at its current value).

Parameters are described in :mod:`astra_ros.node_params` and ``config/world_model.yaml``.

Worlds: a model simulates one world or several (``AstraConfig.worlds``, ``astra_model.worlds``), and
each chunk is drawn by one of them from its own modalities' commands. An episode drives one world: the
one the reset named (``Reset.world``, else the ``world`` parameter), else the world of the first command
after the reset. Until then chunks hold still (a zero twist) where the model has a twist. Commands for
another world are refused and counted until a reset switches worlds; ``status.world`` shows the world
driven.

Commands are stamped with their header stamp (or, for Twist and zero stamps, the model time of
arrival) and held by zero-order hold; one stamped more than a second ahead of model time is refused.
Each command topic passes at most ``max_command_rate`` messages a second: within a burst the newest
waits and replaces the one before (counted as superseded). See :mod:`astra_ros.frame_pipeline` for the
threads, the frame queue and the action-to-frame latency they imply.

Execution: ``main`` spins the node in a ``SingleThreadedExecutor`` whose callbacks are all short; the
model runs in the pipeline's inference thread, which also computes ``~/reset``'s new session and
``~/imagine``'s rollouts, so those services answer through coroutines that wait without blocking the
executor. SIGINT and SIGTERM stop the simulator: requests in progress are answered (``success`` false)
before the node goes down.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Generator
from typing import Any

import numpy as np
from astra_msgs.msg import RolloutStatus
from astra_msgs.srv import Imagine, Reset
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.task import Future
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from astra_model.branches import branch_rollouts
from astra_model.worlds import world_modalities, world_of_modality
from astra_ros import node_params
from astra_ros.action_conversion import COMMAND_TOPICS, ActionConversionError, msg_to_action
from astra_ros.frame_pipeline import (
    ActionChannel,
    ChunkRecord,
    FramePipeline,
    ImagineRequestError,
    LatestWins,
    ModelClock,
    candidate_actions,
)
from astra_ros.image_conversion import (
    ImageConversionError,
    image_msg_to_rgb,
    rgb_to_image_msg,
    stamp_to_ns,
)
from astra_ros.node_main import SPIN_PERIOD_S, run_node
from astra_ros.node_params import StartupError
from astra_ros.resample import OutOfOrderError

NODE_NAME = "world_model_node"
COMMAND_TYPES: dict[str, type] = {"twist": Twist, "joints": JointState, "camera_pose": PoseStamped}
TOPIC_NAMES: tuple[str, ...] = (
    *COMMAND_TOPICS.values(),
    "seed_image",
    "image",
    "camera_info",
    "status",
)
# 16-bit encodings are refused even though they convert: they are usually depth images on the wrong topic.
SEED_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")
STATUS_PERIOD_S = 1.0
RATE_WINDOW_S = 3.0
WARN_THROTTLE_S = 2.0
FUTURE_TOLERANCE_NS = 1_000_000_000
GREY = 128
SHUTDOWN_ANSWER_S = 2.0  # time given to services to answer once the simulator stops
# Imagine return modes that keep only each candidate's last frame.
IMAGINE_KEEP = (Imagine.Request.RETURN_LAST_FRAME, Imagine.Request.RETURN_SUMMARY)


class WorldModelNode(Node):
    """The world model as a ROS 2 camera simulator; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        node_params.declare(self, node_params.LOAD_PARAMS)
        self.checkpoint, self.model = node_params.load_model(self)
        node_params.declare(self, (*node_params.model_params(self.model), *node_params.NODE_PARAMS))
        self._check_chunk_size()
        self.joint_names = self._joint_names()
        self.channels = self._make_channels()
        self.worlds = self._driven_worlds()
        self.world: str | None = self._param("world") or None
        self.first_frame = self._default_first_frame()
        self.frame_size: tuple[int, int] = self.first_frame.shape[:2]
        self.clock = self._model_clock()
        self.pipeline = FramePipeline(
            self._start_session(self.first_frame, self._param("seed")),
            self.first_frame,
            self.clock,
            self._period_ns,
            self._plan,
            self._sampler_settings,
            self._on_chunk_error,
            self._on_chunk,
        )
        self._topic_loggers: dict[str, RcutilsLogger] = {}
        self._first_frame_logged = False
        self._answering = 0  # service calls waiting for the inference thread
        self._superseded_logged: dict[str, int] = {}
        self._make_publishers()
        self._make_subscriptions()
        self._make_services()
        self._make_timers()
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.pipeline.start()
        self.get_logger().info(
            f"simulating {self.checkpoint} at {self._param('frame_rate')} fps, "
            f"{self.pipeline.frames_per_chunk} frames per chunk, frames {self.frame_size[0]}x{self.frame_size[1]}, "
            f"worlds {self.worlds}"
        )

    # -- start-up ------------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _model_clock(self) -> ModelClock:
        try:
            return ModelClock(
                self._param("publish_clock"),
                lambda: self.get_clock().now().nanoseconds,
                self._param("real_time_factor"),
            )
        except ValueError as err:
            raise StartupError(f"real_time_factor: {err}") from err

    def _check_chunk_size(self) -> None:
        expected = self.model.config.chunk_latent_frames
        if self._param("chunk_latent_frames") != expected:
            raise StartupError(
                f"chunk_latent_frames is a property of the model: {self.checkpoint} generates {expected} "
                f"latent frames per chunk, not {self._param('chunk_latent_frames')}; drop that parameter"
            )

    def _joint_names(self) -> list[str] | None:
        try:
            names = self._param("joint_names")
        except ParameterUninitializedException:
            names = None
        dim = self.model.config.modalities.get("joints")
        if dim is not None and (not names or len(names) != dim):
            raise StartupError(
                f"the model's joints action has {dim} elements; set joint_names to their {dim} names "
                f"in model order (got {names})"
            )
        return names

    def _make_channels(self) -> dict[str, ActionChannel]:
        timeout_s = self._param("action_timeout")
        timeout_ns = int(timeout_s * 1e9) if timeout_s > 0 else None
        channels = {}
        for modality, dim in self.model.config.modalities.items():
            if modality not in COMMAND_TOPICS:
                self.get_logger().info(f"model modality {modality!r} has no command topic: it is left out")
                continue
            try:
                channels[modality] = ActionChannel(modality, dim, timeout_ns)
            except ActionConversionError as err:
                raise StartupError(f"model modality {modality!r}: {err}") from err
        return channels

    def _driven_worlds(self) -> dict[str, tuple[str, ...]]:
        """World -> its modalities that have a command topic (worlds without one cannot be driven)."""
        worlds = world_modalities(self.model.config).items()
        return {
            world: kept for world, modalities in worlds if (kept := tuple(m for m in modalities if m in self.channels))
        }

    def _default_first_frame(self) -> np.ndarray:
        if self.model.seed_frame is not None:
            return self.model.seed_frame
        height, width = self._param("image_height"), self._param("image_width")
        self.get_logger().info(f"the model has no seed frame: starting from a mid-grey {height}x{width} frame")
        return np.full((height, width, 3), GREY, dtype=np.uint8)

    def _start_session(self, frame: np.ndarray, seed: int) -> Any:
        try:
            return self.model.start(frame, seed=seed)
        except ValueError as err:
            raise StartupError(f"cannot start a rollout: {err}") from err

    def _make_publishers(self) -> None:
        image_qos = self._qos("image_qos")
        self._image_pub = self.create_publisher(Image, "image", image_qos)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", image_qos)
        self._status_pub = self.create_publisher(RolloutStatus, "status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", 1) if self.clock.simulated else None

    def _make_subscriptions(self) -> None:
        topics = []
        self.gates: dict[str, LatestWins] = {}
        for modality, topic in COMMAND_TOPICS.items():
            if modality not in self.channels:
                self.get_logger().info(f"the model has no {modality!r} action: not subscribing to {topic}")
                continue
            callback = functools.partial(self._on_command, modality, topic)
            self.create_subscription(COMMAND_TYPES[modality], topic, callback, self._qos("command_qos"))
            self.gates[topic] = LatestWins(self._param("max_command_rate"))
            topics.append(topic)
        self.create_subscription(Image, "seed_image", self._on_seed_image, self._qos("image_qos"))
        # Messages refused per topic. All keys exist from the start, so the status timer can read the
        # dict while the inference thread counts.
        self.rejected = dict.fromkeys([*topics, "seed_image"], 0)

    def _make_services(self) -> None:
        # Reset and imagine wait for the inference thread in coroutines. A coroutine keeps its callback group
        # busy until it returns, so they must not share the default group of the timers and subscriptions.
        waiting = ReentrantCallbackGroup()
        self.create_service(Reset, "~/reset", self._on_reset, callback_group=waiting)
        self.create_service(Trigger, "~/pause", functools.partial(self._on_pause, True))
        self.create_service(Trigger, "~/resume", functools.partial(self._on_pause, False))
        self.create_service(Imagine, "~/imagine", self._on_imagine, callback_group=waiting)

    def _make_timers(self) -> None:
        # Steady clock: with use_sim_time the ROS clock would follow the /clock this very timer drives.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.clock.wall_seconds(self._period_ns()):
            self._frame_timer = self.create_timer(self._wall_period_s(), self._publish_frame, clock=steady)
        else:  # as fast as the model computes: the inference thread wakes the executor for each chunk
            self._chunk_ready = self.create_guard_condition(self._publish_queued)
        self.create_timer(STATUS_PERIOD_S, self._publish_status, clock=steady)

    def _wall_period_s(self) -> float:
        return self.clock.wall_seconds(self._period_ns())

    def _qos(self, name: str) -> QoSProfile:
        return qos_profile_sensor_data if self._param(name) == "sensor_data" else QoSProfile(depth=10)

    # -- parameters ----------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            reason = node_params.check_parameter(param.name, param.value)
            if reason is None and param.name == "world" and param.value and param.value not in self.worlds:
                reason = f"world must be empty or one of {sorted(self.worlds)}, got {param.value!r}"
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, params: list[Parameter]) -> None:
        if any(param.name == "frame_rate" for param in params) and hasattr(self, "_frame_timer"):
            self._frame_timer.timer_period_ns = round(self._wall_period_s() * 1e9)

    def _period_ns(self) -> int:
        return round(1e9 / self._param("frame_rate"))

    def _sampler_settings(self) -> dict[str, Any]:
        scale = self._param("guidance_scale")
        model_scale = scale == node_params.MODEL_GUIDANCE  # session.step picks the world's scale
        return {"guidance_scale": None if model_scale else scale, "steps": self._param("denoising_steps")}

    # -- commands ------------------------------------------------------------------------------------
    def _plan(self, times_ns: list[int], now_ns: int) -> dict[str, np.ndarray]:
        """The next chunk's commands: the driven world's modalities; before one is driven, a held-still
        twist where the model has one (else no commands)."""
        for topic, gate in self.gates.items():
            waiting = gate.take()
            if waiting is not None:
                self._apply_command(topic, *waiting)
        if self.world is not None:
            modalities = self.worlds[self.world]
        else:
            modalities = ("twist",) if "twist" in self.channels else ()
        sampled = {modality: self.channels[modality].sample(times_ns, now_ns) for modality in modalities}
        return {modality: actions for modality, actions in sampled.items() if actions is not None}

    def _on_command(self, modality: str, topic: str, msg: Any) -> None:
        try:
            stamp = self._command_stamp(msg)
            self._check_world(modality)
        except ValueError as err:
            self._reject(topic, str(err))
            return
        admitted = self.gates[topic].offer((modality, stamp, msg), time.monotonic())
        if admitted is not None:
            self._apply_command(topic, *admitted)

    def _apply_command(self, topic: str, modality: str, stamp: int, msg: Any) -> None:
        try:
            self._check_world(modality)  # a reset may have come since the message did
            self.channels[modality].push(stamp, msg_to_action(modality, msg, joint_names=self.joint_names))
        except (ValueError, ActionConversionError, OutOfOrderError) as err:
            self._reject(topic, str(err))

    def _check_world(self, modality: str) -> None:
        """Drive the modality's world if none is yet; ValueError if the episode drives another."""
        world = world_of_modality(modality, self.model.config)
        if self.world is None:
            self.world = world
            self.get_logger().info(f"driving the {world!r} world (first command since the reset: {modality})")
        elif world != self.world:
            raise ValueError(
                f"{modality!r} commands the {world!r} world, but this episode drives {self.world!r}: "
                f"call ~/reset with world {world!r} (or empty) to switch worlds"
            )

    def _command_stamp(self, msg: Any) -> int:
        """Model time a command applies from: its header stamp, or now without one."""
        now = self.clock.now_ns()
        header = getattr(msg, "header", None)
        stamp = stamp_to_ns(header.stamp) if header is not None else 0
        if stamp > now + FUTURE_TOLERANCE_NS:
            raise ValueError(
                f"stamped {(stamp - now) / 1e9:.1f} s ahead of model time (more than "
                f"{FUTURE_TOLERANCE_NS / 1e9:.0f} s): refused (does the publisher use /clock when publish_clock is on?)"
            )
        return stamp or now

    def _reject(self, topic: str, reason: str) -> None:
        self.rejected[topic] += 1
        self._topic_logger(topic).warning(f"message ignored: {reason}", throttle_duration_sec=WARN_THROTTLE_S)

    def _topic_logger(self, topic: str) -> RcutilsLogger:
        # rclpy throttles per logger and call site: one child logger per topic keeps one noisy topic
        # from hiding the warnings of another.
        if topic not in self._topic_loggers:
            self._topic_loggers[topic] = self.get_logger().get_child(topic)
        return self._topic_loggers[topic]

    def _decode_seed(self, msg: Image) -> np.ndarray:
        if msg.encoding not in SEED_ENCODINGS:
            raise ImageConversionError(
                f"seed image encoding {msg.encoding!r} is not accepted (accepted: {', '.join(SEED_ENCODINGS)})"
            )
        return image_msg_to_rgb(msg, expected_size=self.frame_size)

    def _on_seed_image(self, msg: Image) -> None:
        try:
            frame = self._decode_seed(msg)
        except ImageConversionError as err:
            self._reject("seed_image", str(err))
            return

        def done(result: Any) -> None:
            if isinstance(result, Exception):
                self._reject("seed_image", f"cannot restart the rollout: {type(result).__name__}: {result}")

        self._request_restart(frame, self._param("seed"), done)

    def _request_restart(self, frame: np.ndarray, seed: int, done: Any) -> None:
        """Restart the rollout from ``frame`` on the inference thread; ``done`` gets None or the error
        (the old rollout then goes on)."""
        self.pipeline.request_restart(lambda: (self.model.start(frame, seed=seed), frame), done)

    # -- services ------------------------------------------------------------------------------------
    async def _wait_for_pipeline(self, request: Any) -> Any:
        """Hand ``request(done)`` to the pipeline and wait, without blocking the executor, for what it
        passes to ``done``."""
        future: Future = Future(executor=self.executor)
        future.add_done_callback(lambda _: None)  # done callbacks wake the executor at once
        self._answering += 1
        try:
            request(future.set_result)
            return await future
        finally:
            self._answering -= 1

    async def _on_reset(self, request: Reset.Request, response: Reset.Response) -> Reset.Response:
        seed = self._param("seed") if request.seed == -1 else request.seed
        if not 0 <= seed <= node_params.MAX_SEED:
            response.message = f"seed must be -1 (keep the seed parameter) or in [0, {node_params.MAX_SEED}]"
            return response
        world = request.world or self._param("world")
        if world and world not in self.worlds:
            response.message = f"unknown world {world!r}: this model simulates {sorted(self.worlds)}"
            return response
        frame = self.first_frame
        if request.use_seed_image:
            try:
                frame = self._decode_seed(request.seed_image)
            except ImageConversionError as err:
                response.message = str(err)
                return response
        # A reset starts a new episode: earlier targets no longer apply. Cleared first so that the new
        # rollout's first chunk cannot be planned with them.
        for channel in self.channels.values():
            channel.clear()
        for gate in self.gates.values():
            gate.clear()
        self.world = world or None
        self.get_logger().info(
            f"reset: driving the {world!r} world" if world else "reset: the first command picks the world"
        )
        result = await self._wait_for_pipeline(functools.partial(self._request_restart, frame, seed))
        if isinstance(result, Exception):
            response.message = f"cannot restart the rollout: {type(result).__name__}: {result}"
            return response
        source = "the given seed image" if request.use_seed_image else "the default first frame"
        response.success = True
        response.message = f"restarted from {source} with seed {seed}" + (f" in the {world!r} world" if world else "")
        return response

    def _on_pause(self, paused: bool, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was_paused = self.pipeline.paused
        self.pipeline.set_paused(paused)
        response.success = True
        state = "paused" if paused else "running"
        response.message = f"already {state}" if was_paused == paused else state
        return response

    async def _on_imagine(self, request: Imagine.Request, response: Imagine.Response) -> Imagine.Response:
        start = time.perf_counter()
        if request.return_mode not in (Imagine.Request.RETURN_FRAMES, *IMAGINE_KEEP):
            response.message = f"unknown return_mode {request.return_mode}"
            return response
        try:
            actions, num_frames = self._candidate_actions(request.candidates)
        except ImagineRequestError as err:
            response.message = str(err)
            return response
        last_only = request.return_mode in IMAGINE_KEEP
        begin = functools.partial(self._imagine, actions, last_only)
        result = await self._wait_for_pipeline(functools.partial(self.pipeline.request_imagine, begin))
        if isinstance(result, Exception):  # e.g. out of memory: refuse the request, keep the node
            response.message = f"imagining failed: {type(result).__name__}: {result}"
            return response
        frames, current, first_stamp = result
        change = np.abs(frames[:, -1].astype(np.int16) - current.astype(np.int16)).mean(axis=(1, 2, 3))
        response.mean_abs_change = change.astype(np.float32).tolist()
        if request.return_mode != Imagine.Request.RETURN_SUMMARY:
            offsets = [num_frames - 1] if last_only else range(num_frames)
            stamps = [first_stamp + offset * self._period_ns() for offset in offsets]
            response.frames = [
                rgb_to_image_msg(frame, Image, stamp=stamp, frame_id=self._param("frame_id"))
                for candidate in frames
                for frame, stamp in zip(candidate, stamps, strict=True)
            ]
            response.frames_per_candidate = len(stamps)
        response.num_candidates = len(request.candidates)
        response.success = True
        response.message = f"imagined {len(request.candidates)} candidates over {num_frames} frames"
        response.compute_time_ms = (time.perf_counter() - start) * 1e3
        return response

    def _candidate_actions(self, candidates: list[Any]) -> tuple[dict[str, np.ndarray], int]:
        """The candidates' commands, checked before anything is forked: one world's modalities, and a
        held command for each of them a candidate leaves out."""
        config = self.model.config
        named = {s.modality for candidate in candidates for s in candidate.sequences if s.modality in config.modalities}
        worlds = {world_of_modality(modality, config) for modality in named}
        if len(worlds) > 1:
            raise ImagineRequestError(f"the candidates command several worlds {sorted(worlds)}: give one world's")
        now = self.clock.now_ns()
        held = {m: self.channels[m].sample([now], now) for world in worlds for m in self.worlds.get(world, ())}
        return candidate_actions(
            candidates,
            config.modalities,
            {modality: value[0] for modality, value in held.items() if value is not None},
            self.pipeline.frames_per_chunk,
            self._param("imagine_max_candidates"),
            self._param("imagine_max_chunks"),
        )

    def _imagine(
        self, actions: dict[str, np.ndarray], last_only: bool, session: Any, current: np.ndarray, queued: int
    ) -> Generator[None, None, tuple[np.ndarray, np.ndarray, int]]:
        """Runs on the inference thread: the candidates' rollouts from the live state, the frame they
        continue from, and the model time of their first frame (after the frames already queued)."""
        first_stamp = self.clock.now_ns() + (queued + 1) * self._period_ns()
        settings = self._sampler_settings()
        max_batch = self._param("imagine_max_batch")
        keep_last = 1 if last_only else None
        frames = yield from branch_rollouts(self.model, session.snapshot(), actions, max_batch, settings, keep_last)
        return frames, current, first_stamp

    # -- publishing ----------------------------------------------------------------------------------
    def _publish_queued(self) -> None:
        while self._publish_frame():
            pass

    def _publish_frame(self) -> bool:
        """Publish the next frame; False when there is none."""
        frame = self.pipeline.pop()
        if frame is None:
            return False
        stamp = self.clock.stamp_next_frame(self._period_ns())
        image = rgb_to_image_msg(frame, Image, stamp=stamp, frame_id=self._param("frame_id"))
        self._image_pub.publish(image)
        self._info_pub.publish(self._camera_info(image))
        if self._clock_pub is not None:
            self._clock_pub.publish(ClockMsg(clock=image.header.stamp))
        if not self._first_frame_logged:
            self._first_frame_logged = True
            self.get_logger().info("first frame published")
        return True

    def _camera_info(self, image: Image) -> CameraInfo:
        # A pinhole with square pixels whose horizontal field of view is fov_deg.
        width, height = image.width, image.height
        focal = (width / 2) / math.tan(math.radians(self._param("fov_deg")) / 2)
        cx, cy = width / 2, height / 2
        info = CameraInfo(header=image.header, width=width, height=height, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _publish_status(self) -> None:
        sec, nanosec = divmod(self.clock.now_ns(), 1_000_000_000)
        status = RolloutStatus()
        status.header.stamp = Time(sec=sec, nanosec=nanosec)
        status.header.frame_id = self._param("frame_id")
        records = self.pipeline.chunk_records()
        status.chunk_latency_ms = records[-1].latency_s * 1e3 if records else 0.0
        status.frames_per_second = self.pipeline.measured_rate(RATE_WINDOW_S)
        status.target_frames_per_second = self._param("frame_rate")
        status.real_time_factor = status.frames_per_second / status.target_frames_per_second
        status.history_length = self.pipeline.history_length
        status.rollout_step = self.pipeline.step_count
        status.frames_published = self.pipeline.frames_since_restart
        status.world = self.world or ""
        status.paused = self.pipeline.paused
        status.checkpoint = str(self.checkpoint)
        self._status_pub.publish(status)
        self._diag_pub.publish(DiagnosticArray(header=status.header, status=[self._diagnostic(status)]))
        self._log_bursts()

    def _log_bursts(self) -> None:
        for topic, gate in self.gates.items():
            count = gate.superseded - self._superseded_logged.get(topic, 0)
            if count:
                self._superseded_logged[topic] = gate.superseded
                self._topic_logger(topic).warning(
                    f"burst: {count} messages came faster than max_command_rate "
                    f"({self._param('max_command_rate'):g}/s) and were superseded by newer ones",
                    throttle_duration_sec=WARN_THROTTLE_S,
                )

    def _diagnostic(self, status: RolloutStatus) -> DiagnosticStatus:
        level, message = DiagnosticStatus.OK, "paused" if status.paused else "running"
        target = self.clock.real_time_factor or status.real_time_factor  # as fast as it computes: never behind
        behind = status.real_time_factor < 0.9 * target
        if self.pipeline.last_error:
            level, message = DiagnosticStatus.ERROR, f"chunks fail: {self.pipeline.last_error}"
        elif not status.paused and status.rollout_step >= 2 and behind:
            level = DiagnosticStatus.WARN
            message = (
                f"model slower than asked: real-time factor {status.real_time_factor:.2f} of {target:.2f} "
                f"({status.frames_per_second:.1f} of {target * status.target_frames_per_second:.1f} frames/s)"
            )
        values = {
            "checkpoint": status.checkpoint,
            "device": self._param("device"),
            "frame size": f"{self.frame_size[0]}x{self.frame_size[1]}",
            "frames per chunk": self.pipeline.frames_per_chunk,
            "chunk latency ms": f"{status.chunk_latency_ms:.1f}",
            "frames per second": f"{status.frames_per_second:.2f}",
            "target frames per second": f"{status.target_frames_per_second:.2f}",
            "real-time factor": f"{status.real_time_factor:.2f}",
            "queued frames": self.pipeline.queued,
            "rollout step": status.rollout_step,
            "history length": status.history_length,
            "world": status.world,
            "imagine requests": self.pipeline.imagining,
            **{f"rejected {topic}": count for topic, count in self.rejected.items()},
            **{f"superseded {topic}": gate.superseded for topic, gate in self.gates.items()},
        }
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: rollout",
            message=message,
            hardware_id=str(self.checkpoint),
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )

    def _on_chunk(self, record: ChunkRecord) -> None:
        if hasattr(self, "_chunk_ready"):
            self._chunk_ready.trigger()
        # The frame numbers count every frame published since start-up: a subscriber that got them all
        # can tell which frames each command reached (bench/node_latency.py does).
        self.get_logger().debug(
            f"chunk {record.step} planned at {record.planned_ns} ns: frames from {record.first_frame}, "
            f"computed in {record.latency_s * 1e3:.0f} ms"
        )

    def _on_chunk_error(self, err: Exception) -> None:
        self.get_logger().error(f"chunk failed: {type(err).__name__}: {err}", throttle_duration_sec=WARN_THROTTLE_S)

    # -- shutdown ------------------------------------------------------------------------------------
    def stop_serving(self, executor: Executor) -> None:
        """Stop the inference thread and spin ``executor`` until the service calls that waited for it
        have been answered (they end with ``success`` false)."""
        self._stop_pipeline()
        deadline = time.monotonic() + SHUTDOWN_ANSWER_S
        while self._answering and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S / 2)

    def _stop_pipeline(self) -> None:
        # rclpy also destroys a node whose constructor failed (at context shutdown): it may have no pipeline.
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            longest = max((record.latency_s for record in pipeline.chunk_records()), default=0.0)
            if not pipeline.stop(timeout_s=5.0 + 2 * longest):
                self.get_logger().warning("the inference thread is still busy; leaving it behind")

    def destroy_node(self) -> None:
        self._stop_pipeline()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, WorldModelNode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    sys.exit(main())
