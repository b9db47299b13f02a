"""Frame pipeline of the world-model node: model time, action channels and the inference thread.

Nothing here imports rclpy, so the timing logic can be reasoned about (and reused) on its own.

Timing, with F video frames per chunk, T = 1 / frame_rate and L the time one chunk takes to compute:

- A publisher timer pops one frame every T from a bounded queue, so the published rate is steady as
  long as L < F*T.
- The inference thread plans the next chunk just in time: once the frames still queued last no
  longer than the chunk's compute time with a margin, ``lead = ceil(LEAD_MARGIN * L_max / T)``
  frames (at most F), where ``L_max`` is the longest of the last ``LEAD_WINDOW`` chunks: the chunk
  then has (lead+1)*T before the queue runs dry. Planning later would let it run dry; planning
  earlier only makes commands wait longer.
- The chunk's actions are sampled at its frame times in model time; commands arriving after the
  planning moment cannot be in it. Plans happen every F*T, so a command first shows in a published
  frame between (lead+1)*T and F*T + (lead+1)*T after it is accepted, F*T/2 + (lead+1)*T on
  average, with lead*T just above L. With F=8 at 10 fps and L_max = 0.55 s (the demo model on two
  CPU cores): a lead of 7 frames, 0.8 to 1.6 s, 1.2 s on average. A model slower than real time
  (L > F*T) computes back to back instead, and the latency grows to between L+T and 2L+T.
- ``/clock`` mode does not change this in frames; in model time the latency is the same number
  of frame periods.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from astra_ros.action_conversion import neutral_action
from astra_ros.resample import ZeroOrderHold

# Commands kept per modality: a burst far above the frame rate only needs the latest few.
ACTION_HISTORY = 64
# Chunks whose timing is kept for diagnostics and benchmarks.
CHUNK_RECORDS = 256
# Just-in-time planning: the queue must outlast LEAD_MARGIN times the longest of the last LEAD_WINDOW chunks.
LEAD_MARGIN = 1.1
LEAD_WINDOW = 8
# Pause after a failed chunk before retrying, so a persistent failure cannot spin a CPU core.
ERROR_BACKOFF_S = 1.0
# Publish times kept for the measured frame rate.
RATE_WINDOW = 64


class ModelClock:
    """Model time in nanoseconds: what frame stamps, command stamps and ``/clock`` are measured in.

    Args:
        simulated: True: model time starts at 0 and advances by one frame period per published
            frame, so a model slower than real time slows time down for everyone on ``/clock``.
            False: model time is ROS time (``ros_now``).
        ros_now: the node's ROS time in nanoseconds.
        real_time_factor: simulated model seconds per wall second the publisher aims at; 0: as fast as
            the model computes. Wall time (``simulated`` False) runs at 1.
    """

    def __init__(self, simulated: bool, ros_now: Callable[[], int], real_time_factor: float = 1.0) -> None:
        if not simulated and real_time_factor != 1.0:
            raise ValueError("a real-time factor other than 1 needs simulated time (publish_clock)")
        self.simulated = simulated
        self.real_time_factor = real_time_factor
        self._ros_now = ros_now
        self._last_stamp: int | None = None
        self._lock = threading.Lock()

    def wall_seconds(self, model_ns: int) -> float:
        """Wall seconds that `model_ns` of model time take to publish (0 when frames leave as computed)."""
        return model_ns / 1e9 / self.real_time_factor if self.real_time_factor else 0.0

    def now_ns(self) -> int:
        if not self.simulated:
            return self._ros_now()
        with self._lock:
            return self._last_stamp or 0

    def stamp_next_frame(self, period_ns: int) -> int:
        """Model time of the frame published now."""
        with self._lock:
            last = self._last_stamp
            stamp = self._simulated_stamp(last, period_ns) if self.simulated else self._wall_stamp(last, period_ns)
            self._last_stamp = stamp
            return stamp

    @staticmethod
    def _simulated_stamp(last: int | None, period_ns: int) -> int:
        return 0 if last is None else last + period_ns

    def _wall_stamp(self, last: int | None, period_ns: int) -> int:
        # Regular stamps while publishing keeps pace; after a pause or an underrun the stamps jump
        # to the present instead of drifting further behind real time.
        now = self._ros_now()
        if last is None:
            return now
        expected = last + period_ns
        stamp = expected if abs(now - expected) <= period_ns // 2 else now
        return max(stamp, last + 1)


class ActionChannel:
    """Zero-order hold of one action modality's commands, sampled onto a chunk's frame times.

    - twist is a rate command: when its newest command is older than ``timeout_ns`` at planning
      time, the whole chunk gets the neutral (zero) twist. The age is taken at planning time rather
      than at each frame time because the frames lie up to two chunks ahead: a live command stream
      would otherwise always look stale by the time its frames are shown.
    - joints and camera_pose are absolute targets: they hold their last value; going back to a
      neutral pose after a timeout would teleport the robot or the camera.
    - Before the first command twist is neutral (no motion). Joints and camera_pose are left out:
      zero angles and the identity pose are real configurations that need not match the scene, and
      a model reading relative poses takes the first commanded pose as where the camera is.

    All methods are thread-safe: subscriptions push while the inference thread samples.
    """

    def __init__(self, modality: str, dim: int, timeout_ns: int | None) -> None:
        self.modality = modality
        self.dim = dim
        self.neutral = neutral_action(modality, dim)
        self._timeout_ns = timeout_ns if modality == "twist" else None
        self._lock = threading.Lock()
        self._zoh = self._new_hold()

    def _new_hold(self) -> ZeroOrderHold:
        return ZeroOrderHold(self.neutral, timeout_ns=None, max_history=ACTION_HISTORY)

    @property
    def last_stamp_ns(self) -> int | None:
        with self._lock:
            return self._zoh.last_stamp_ns

    def push(self, stamp_ns: int, value: np.ndarray) -> None:
        """Add a command; raises ``resample.OutOfOrderError`` if it is older than the newest one."""
        with self._lock:
            self._zoh.push(stamp_ns, value)

    def clear(self) -> None:
        """Forget all commands (a reset starts a new episode)."""
        with self._lock:
            self._zoh = self._new_hold()

    def sample(self, times_ns: list[int], now_ns: int) -> np.ndarray | None:
        """``[len(times_ns), dim]`` float32 actions at the given frame times, or None to leave it out."""
        with self._lock:
            last = self._zoh.last_stamp_ns
            if last is None and self.modality in ("joints", "camera_pose"):
                return None
            if last is None or not self._alive(last, now_ns):
                return np.tile(self.neutral, (len(times_ns), 1))
            return np.stack([self._zoh.sample(t) for t in times_ns])

    def _alive(self, last_ns: int, now_ns: int) -> bool:
        return self._timeout_ns is None or now_ns - last_ns <= self._timeout_ns


class LatestWins:
    """Lets at most ``max_rate`` items a second through; one that comes sooner waits in a single slot,
    where a newer one replaces it (the replaced one is counted in ``superseded``). A zero-order hold
    only ever samples the newest command, so a burst loses nothing that would have been shown, while
    the work per message stays bounded. Thread-safe: items are offered by subscriptions and taken by
    the inference thread before it plans.
    """

    def __init__(self, max_rate: float) -> None:
        self.interval_s = 1.0 / max_rate
        self.superseded = 0
        self._last_s: float | None = None
        self._waiting: Any = None
        self._lock = threading.Lock()

    def offer(self, item: Any, now_s: float) -> Any:
        """``item`` if it may pass now, else None (it waits)."""
        with self._lock:
            if self._last_s is not None and now_s - self._last_s < self.interval_s:
                self.superseded += self._waiting is not None
                self._waiting = item
                return None
            self.superseded += self._waiting is not None  # older than this one
            self._waiting = None
            self._last_s = now_s
            return item

    def take(self) -> Any:
        """The waiting item, or None; it passes now."""
        with self._lock:
            item, self._waiting = self._waiting, None
            return item

    def clear(self) -> None:
        with self._lock:
            self._waiting = None


@dataclass(frozen=True)
class ChunkRecord:
    """Timing of one computed chunk."""

    step: int  # rollout step of the chunk since the last restart (0 = first chunk)
    first_frame: int  # pipeline-wide number of its first frame (never reset)
    planned_ns: int  # model time at which its actions were sampled
    planned_monotonic: float  # time.monotonic() at that moment
    latency_s: float  # time session.step took


class PipelineStopped(RuntimeError):
    """The pipeline stopped before it could serve a request."""


# planner(frame_times_ns, now_ns) -> actions for session.step
Planner = Callable[[list[int], int], dict[str, np.ndarray]]
# sampler_settings() -> keyword arguments for session.step (guidance_scale, steps)
SamplerSettings = Callable[[], dict[str, Any]]
# done(result or the exception that ended the request), called on the inference thread
Done = Callable[[Any], None]


@dataclass
class _Restart:
    start: Callable[[], tuple[Any, np.ndarray]]  # -> (new session, its first frame)
    done: Done


@dataclass
class _Imagine:
    # (live session, its last frame, frames queued ahead of it) -> its pieces (astra_model.pieces)
    begin: Callable[[Any, np.ndarray, int], Generator[None, None, Any]]
    done: Done
    steps: Generator[None, None, Any] | None = None


class FramePipeline:
    """Runs a rollout session in a thread of its own and queues its frames for a publisher.

    The inference thread owns the session. Between chunks it serves, in this order: restarts, the live
    chunk when it is due, and one piece (a denoising step or a decoded latent frame,
    ``astra_model.pieces``) of a pending ``imagine`` request. A piece starts only when the frames
    queued cover it and still leave the next live chunk its lead (both estimated from the last ones
    measured), so imagining takes the time the live stream leaves free, ``F*T - L`` per chunk, and
    does not slow it. If no piece ever fits (the model is slower than real time, or a piece is
    longer than the free time), one piece runs after each live chunk, and the stream slows by as
    much. A paused stream gives imagining all of the time.

    Args:
        session: the live ``RolloutSession``.
        first_frame: uint8 ``[H, W, 3]`` frame the session started from.
        clock: model time.
        period_ns: current frame period (may change at run time).
        planner: samples the actions of the next chunk.
        sampler_settings: current sampling settings.
        on_error: called with the exception of a failed chunk (the thread carries on).
        on_chunk: called with the record of each chunk computed.
    """

    def __init__(
        self,
        session: Any,
        first_frame: np.ndarray,
        clock: ModelClock,
        period_ns: Callable[[], int],
        planner: Planner,
        sampler_settings: SamplerSettings,
        on_error: Callable[[Exception], None],
        on_chunk: Callable[[ChunkRecord], None] = lambda _: None,
    ) -> None:
        self._session = session
        self._last_frame = first_frame
        self._clock = clock
        self._period_ns = period_ns
        self._planner = planner
        self._sampler_settings = sampler_settings
        self._on_error = on_error
        self._on_chunk = on_chunk
        self.frames_per_chunk: int = session.frames_per_step
        self._cond = threading.Condition()
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._restarts: collections.deque[_Restart] = collections.deque()
        self._imagines: collections.deque[_Imagine] = collections.deque()
        self._piece_s: collections.deque[float] = collections.deque(maxlen=LEAD_WINDOW)  # recent imagine pieces
        self._imagine_turn = False  # a live chunk ran since the last imagine piece
        self._paused = False
        self._stopping = False
        self._frames_out = 0
        self._frames_since_restart = 0
        self._publish_times: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW)
        self._records: collections.deque[ChunkRecord] = collections.deque(maxlen=CHUNK_RECORDS)
        self.last_error: str = ""
        self._thread = threading.Thread(target=self._run, name="astra-inference", daemon=True)

    # -- control -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Stop the inference thread after its current chunk or micro-step; requests still pending end
        with ``PipelineStopped``. True if the thread ended within ``timeout_s``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def request_restart(self, start: Callable[[], tuple[Any, np.ndarray]], done: Done) -> None:
        """Continue from ``start()``'s session and first frame, built on the inference thread before the
        next chunk: frames queued from the old one are dropped. ``done`` gets None, or the exception
        that ``start`` raised (the old session then goes on)."""
        self._submit(self._restarts, _Restart(start, done))

    def request_imagine(self, begin: Callable[[Any, np.ndarray, int], Generator[None, None, Any]], done: Done) -> None:
        """Run the pieces of ``begin(live session, its last frame, frames queued)`` between live chunks
        (see the class docstring); ``done`` gets their return value, or the exception that ended them."""
        self._submit(self._imagines, _Imagine(begin, done))

    def _submit(self, queue: collections.deque, request: Any) -> None:
        with self._cond:
            if self._stopping:
                request.done(PipelineStopped("the simulator is shutting down"))
                return
            queue.append(request)
            self._cond.notify_all()

    # -- publisher side ------------------------------------------------------------------------------
    def pop(self) -> np.ndarray | None:
        """Next frame to publish, or None while paused or when the model has not kept up."""
        with self._cond:
            if self._paused or not self._queue:
                return None
            frame = self._queue.popleft()
            self._frames_out += 1
            self._frames_since_restart += 1
            self._publish_times.append(time.monotonic())
            self._cond.notify_all()
            return frame

    # -- statistics ----------------------------------------------------------------------------------
    @property
    def frames_out(self) -> int:
        """Frames popped since the pipeline started (the number the next popped frame gets)."""
        return self._frames_out

    @property
    def frames_since_restart(self) -> int:
        return self._frames_since_restart

    @property
    def step_count(self) -> int:
        return self._session.step_count

    @property
    def history_length(self) -> int:
        return self._session.history_length

    @property
    def imagining(self) -> int:
        """Imagine requests pending or in progress."""
        return len(self._imagines)

    def chunk_records(self) -> list[ChunkRecord]:
        """Timing of the most recent chunks, oldest first."""
        with self._cond:
            return list(self._records)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def measured_rate(self, window_s: float) -> float:
        """Frames per second popped over the last ``window_s`` (0 if fewer than two frames)."""
        with self._cond:
            horizon = time.monotonic() - window_s
            recent = [t for t in self._publish_times if t >= horizon]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    # -- inference thread ----------------------------------------------------------------------------
    def _live_due(self) -> bool:
        return not self._paused and len(self._queue) <= self._lead_frames()

    def _chunk_s(self) -> float:
        """Longest compute time of the recent chunks (0 before the first)."""
        recent = itertools.islice(reversed(self._records), LEAD_WINDOW)
        return max((record.latency_s for record in recent), default=0.0)

    def _lead_frames(self) -> int:
        """Frames still queued when the next chunk is planned (see the module docstring)."""
        if not self._records:
            return self.frames_per_chunk
        period_s = self._clock.wall_seconds(self._period_ns())
        if period_s == 0:  # frames leave as soon as they are computed: compute back to back
            return self.frames_per_chunk
        return min(self.frames_per_chunk, math.ceil(LEAD_MARGIN * self._chunk_s() / period_s))

    def _imagine_fits(self, queued: int | None = None) -> bool:
        """An imagine piece started with ``queued`` frames (default: the queue now) leaves the next live
        chunk the lead it plans with."""
        chunk_s = self._chunk_s()
        piece_s = max(self._piece_s, default=chunk_s)
        queued = len(self._queue) if queued is None else queued
        return self._paused or piece_s + LEAD_MARGIN * chunk_s <= queued * self._clock.wall_seconds(self._period_ns())

    def _imagine_never_fits(self) -> bool:
        # The queue is fullest right after a live chunk: the lead plus a chunk, less what went out meanwhile.
        period_s = self._clock.wall_seconds(self._period_ns())
        gone = math.ceil(self._chunk_s() / period_s) if period_s else self.frames_per_chunk
        fullest = self._lead_frames() + self.frames_per_chunk - gone
        return not self._imagine_fits(fullest)

    def _next_work(self) -> Callable[[], None] | None:
        if self._restarts:
            return self._restart
        imagine = bool(self._imagines)
        if imagine and self._imagine_turn and self._imagine_never_fits():
            return self._imagine_step
        if self._live_due():
            return self._compute_chunk
        return self._imagine_step if imagine and self._imagine_fits() else None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._next_work() is not None)
                if self._stopping:
                    break
                work = self._next_work()
            try:
                work()
            except Exception as err:  # a failed chunk must not end the simulator; it is reported
                self.last_error = f"{type(err).__name__}: {err}"
                self._on_error(err)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=ERROR_BACKOFF_S)
        self._end_requests()

    def _end_requests(self) -> None:
        with self._cond:
            pending = [*self._restarts, *self._imagines]
            self._restarts.clear()
            self._imagines.clear()
        for request in pending:
            if isinstance(request, _Imagine) and request.steps is not None:
                request.steps.close()
            request.done(PipelineStopped("the simulator is shutting down"))

    def _restart(self) -> None:
        with self._cond:
            request = self._restarts.popleft()
        try:
            session, first_frame = request.start()
        except Exception as err:  # e.g. out of memory: keep simulating from the old state
            request.done(err)
            return
        with self._cond:
            self._session = session
            self._last_frame = first_frame
            self._queue.clear()
            self._frames_since_restart = 0
            self._cond.notify_all()
        request.done(None)

    def _imagine_step(self) -> None:
        request = self._imagines[0]
        start = time.perf_counter()
        try:
            if request.steps is None:
                request.steps = request.begin(self._session, self._last_frame, len(self._queue))
            next(request.steps)
        except StopIteration as finished:
            self._finish_imagine(request, finished.value)
        except Exception as err:  # the request fails; the live rollout is not touched
            self._finish_imagine(request, err)
        else:
            self._piece_s.append(time.perf_counter() - start)
        self._imagine_turn = False

    def _finish_imagine(self, request: _Imagine, result: Any) -> None:
        with self._cond:
            self._imagines.popleft()
        request.done(result)

    def _compute_chunk(self) -> None:
        session = self._session
        now = self._clock.now_ns()
        period = self._period_ns()
        ahead = len(self._queue) + 1
        times = [now + (ahead + j) * period for j in range(self.frames_per_chunk)]
        planned_monotonic = time.monotonic()
        actions = self._planner(times, now)
        start = time.perf_counter()
        frames = session.step(actions, **self._sampler_settings())
        latency = time.perf_counter() - start
        with self._cond:
            record = ChunkRecord(
                session.step_count - 1, self._frames_out + len(self._queue), now, planned_monotonic, latency
            )
            self._records.append(record)
            self._queue.extend(frames)
            self._last_frame = frames[-1]
            self._imagine_turn = True
            self.last_error = ""
            self._cond.notify_all()
        self._on_chunk(record)


class ImagineRequestError(ValueError):
    """An imagine request cannot be served; the message says why."""


def candidate_actions(
    candidates: Sequence[Any],
    modalities: Mapping[str, int],
    held: Mapping[str, np.ndarray],
    frames_per_chunk: int,
    max_candidates: int,
    max_chunks: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Stack imagined action plans into per-modality batches.

    Args:
        candidates: ``astra_msgs/ActionCandidate``-like objects (``sequences`` of ``modality``,
            ``num_frames``, ``dim``, ``data``).
        modalities: the model's modality dimensions.
        held: ``[D]`` value of each modality now; it fills in for a candidate that leaves the
            modality out.
        frames_per_chunk: every sequence must span a positive multiple of this.
        max_candidates, max_chunks: bounds on the batch, since all its frames are held in memory.

    Returns:
        (modality -> float32 ``[n, num_frames, D]``, num_frames).
    """
    if not 1 <= len(candidates) <= max_candidates:
        raise ImagineRequestError(f"give 1 to {max_candidates} candidates, got {len(candidates)}")
    plans = [_candidate_plan(i, candidate, modalities) for i, candidate in enumerate(candidates)]
    lengths = {len(values) for plan in plans for values in plan.values()}
    if len(lengths) != 1:
        raise ImagineRequestError(
            "every sequence of every candidate must span the same number of frames"
            if lengths
            else "the candidates give no action sequences: imagine needs num_frames from at least one"
        )
    num_frames = lengths.pop()
    if num_frames % frames_per_chunk or not 1 <= num_frames // frames_per_chunk <= max_chunks:
        raise ImagineRequestError(
            f"num_frames must be a multiple of the model's {frames_per_chunk} frames per chunk, "
            f"at most {max_chunks} chunks; got {num_frames}"
        )
    used = set(held) | {modality for plan in plans for modality in plan}
    return {modality: _modality_batch(modality, plans, held, num_frames) for modality in sorted(used)}, num_frames


def _candidate_plan(index: int, candidate: Any, modalities: Mapping[str, int]) -> dict[str, np.ndarray]:
    plan: dict[str, np.ndarray] = {}
    for sequence in candidate.sequences:
        modality, frames, dim = str(sequence.modality), int(sequence.num_frames), int(sequence.dim)
        where = f"candidate {index}, {modality!r}"
        if modality not in modalities:
            raise ImagineRequestError(f"{where}: the model has no such modality (it has {sorted(modalities)})")
        if modality in plan:
            raise ImagineRequestError(f"{where}: given twice")
        if dim != modalities[modality]:
            raise ImagineRequestError(f"{where}: dim is {dim}, the model's is {modalities[modality]}")
        data = np.asarray(sequence.data, dtype=np.float32)
        if data.size != frames * dim or frames == 0:
            raise ImagineRequestError(f"{where}: {data.size} values do not fill num_frames x dim = {frames} x {dim}")
        if not np.isfinite(data).all():
            raise ImagineRequestError(f"{where}: contains NaN or infinite values")
        plan[modality] = data.reshape(frames, dim)
    return plan


def _modality_batch(
    modality: str, plans: list[dict[str, np.ndarray]], held: Mapping[str, np.ndarray], num_frames: int
) -> np.ndarray:
    rows = []
    for index, plan in enumerate(plans):
        if modality in plan:
            rows.append(plan[modality])
        elif modality in held:
            rows.append(np.tile(held[modality], (num_frames, 1)))
        else:
            raise ImagineRequestError(
                f"candidate {index} leaves out {modality!r} and there is no current command to hold"
            )
    return np.stack(rows).astype(np.float32)
