"""Shared machinery of the MuJoCo data-generation worlds: rendering, state snapshots, action checks.

Each domain module subclasses `MujocoEnv` and supplies the scene (`_build_xml`), the randomised start
(`_randomize`), what one control period does (`_apply_action`) and a command generator
(`sample_actions`). The helpers at the bottom generate smooth command signals (Ornstein-Uhlenbeck
noise, minimum-jerk profiles, per-frame rate limits) for those generators.
"""

from __future__ import annotations

import atexit
import copy
import os
import sys
import warnings
import weakref
from typing import Any, ClassVar

_GL_CHOSEN_BY_USER = "MUJOCO_GL" in os.environ
_MUJOCO_ALREADY_IMPORTED = "mujoco" in sys.modules
os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless CPU rendering; must precede `import mujoco`

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def _fix_gl_backend() -> None:
    """MuJoCo picks its GL backend when first imported. If that happened before this module with no
    MUJOCO_GL set, it chose GLFW, which cannot work without a display: switch the offscreen renderer
    to OSMesa in that case, and warn if even that is impossible."""
    if _GL_CHOSEN_BY_USER or not _MUJOCO_ALREADY_IMPORTED:
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return  # GLFW can open its hidden window
    try:
        from mujoco.osmesa import GLContext as OSMesaContext
        from mujoco.rendering.classic import gl_context
    except Exception as err:  # PyOpenGL already bound to another platform, or libOSMesa missing
        warnings.warn(
            f"mujoco was imported before astra_ros.envs without MUJOCO_GL set and OSMesa could not be "
            f"enabled afterwards ({err}); set MUJOCO_GL=osmesa or import astra_ros.envs first",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    gl_context.GLContext = OSMesaContext


_fix_gl_backend()

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION  # everything mj_step reads, warm start included

# Visual settings every scene shares. Shadow maps dominate software-rendering cost (a 4096 map
# takes ~50 ms per frame under OSMesa), so one shadow-casting light with a small map is used.
VISUAL_XML = """
  <visual>
    <quality shadowsize="1024" offsamples="4"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.4 0.4 0.4" specular="0.05 0.05 0.05"/>
    <map znear="0.01" zfar="60" haze="0.15"/>
  </visual>
"""

_LIVE_ENVS: weakref.WeakSet[MujocoEnv] = weakref.WeakSet()


@atexit.register
def _close_live_envs() -> None:
    # Free GL contexts while the interpreter is still intact (OSMesa teardown fails during shutdown).
    for env in list(_LIVE_ENVS):
        env.close()


def parse_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """`64` -> `(64, 64)`; `(H, W)` -> `(H, W)`; anything else -> ValueError."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        height = width = int(image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        height, width = (int(v) for v in image_size)
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair of ints, got {image_size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


class MujocoEnv:
    """Base class: one MuJoCo model, one MjData, one reusable offscreen renderer.

    Subclasses set the class attributes below and implement `_build_xml`, `_randomize`,
    `_apply_action` and `sample_actions`. `action_low`/`action_high` are the documented limits;
    `sample_actions` stays within them and `step` saturates to them (domains may document more).
    """

    domain: ClassVar[str]
    modality: ClassVar[str]
    frame_rate: ClassVar[float] = 10.0
    camera_name: ClassVar[str]
    _action_names: ClassVar[tuple[str, ...]]
    action_low: np.ndarray
    action_high: np.ndarray

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("action_low", "action_high"):  # shared by all instances: make them read-only
            if name in cls.__dict__:
                limits = np.array(cls.__dict__[name], dtype=np.float64)
                limits.setflags(write=False)
                setattr(cls, name, limits)

    def __init__(self, seed: int = 0, image_size: int | tuple[int, int] = 64) -> None:
        self._renderer: mujoco.Renderer | None = None
        self.seed = seed
        self.height, self.width = parse_image_size(image_size)
        self._rng = np.random.default_rng(seed)
        self.model = mujoco.MjModel.from_xml_string(self._build_xml())
        # The offscreen buffer only needs the requested size; smaller buffers render faster.
        self.model.vis.global_.offwidth = self.width
        self.model.vis.global_.offheight = self.height
        self.data = mujoco.MjData(self.model)
        self._camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name)
        if self._camera_id < 0:
            raise RuntimeError(f"{type(self).__name__}: camera {self.camera_name!r} missing from the model")
        self.frame_dt = 1.0 / self.frame_rate
        self.substeps = max(1, round(self.frame_dt / self.model.opt.timestep))
        self._step_count = 0
        self._state_size = mujoco.mj_stateSize(self.model, _STATE_SPEC)
        self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        _LIVE_ENVS.add(self)
        self._init_sim()

    # --- interface --------------------------------------------------------------------------------

    @property
    def action_names(self) -> list[str]:
        return list(self._action_names)

    @property
    def action_dim(self) -> int:
        return len(self._action_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def reset(self) -> np.ndarray:
        """Randomised start drawn from the env's seeded RNG; returns the first frame."""
        mujoco.mj_resetData(self.model, self.data)
        self._randomize(self._rng)
        mujoco.mj_forward(self.model, self.data)
        self._step_count = 0
        return self.render()

    def step(self, action: np.ndarray) -> np.ndarray:
        """Apply `action` for one video frame (1 / frame_rate seconds of simulated time) and render."""
        self._apply_action(self.check_action(action))
        self._step_count += 1
        return self.render()

    def advance(self, actions: np.ndarray) -> np.ndarray:
        """`step` through `[n, action_dim]` commands, rendering only the last frame (planners that score
        where a command sequence ends need no frame before it)."""
        for action in np.asarray(actions):
            self._apply_action(self.check_action(action))
            self._step_count += 1
        return self.render()

    def render(self) -> np.ndarray:
        """The current view as a new uint8 array [H, W, 3]."""
        if self._renderer is None:
            raise RuntimeError(f"{self.domain} env is closed")
        self._renderer.update_scene(self.data, camera=self._camera_id)
        return self._renderer.render()

    def state(self) -> dict[str, Any]:
        """A self-contained, picklable snapshot; `set_state` restores it exactly.

        Keys: `domain`, `physics` (MuJoCo's full integration state: time, qpos, qvel, act, ctrl,
        warm start, mocap poses, ...), `qpos`, `qvel`, `time` (copies, for inspection),
        `step_count`, `rng` (state of the env's reset RNG) and any domain-specific variables.
        """
        physics = np.empty(self._state_size, dtype=np.float64)
        mujoco.mj_getState(self.model, self.data, physics, _STATE_SPEC)
        snapshot = {
            "domain": self.domain,
            "physics": physics,
            "qpos": self.data.qpos.copy(),
            "qvel": self.data.qvel.copy(),
            "time": float(self.data.time),
            "step_count": self._step_count,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
        }
        snapshot.update(copy.deepcopy(self._extra_state()))
        return snapshot

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from `state()` (of any env of the same domain)."""
        if not isinstance(state, dict) or "physics" not in state:
            raise ValueError(f"set_state expects a dict returned by state(), got {type(state).__name__}")
        if state.get("domain") != self.domain:
            raise ValueError(f"state is from domain {state.get('domain')!r}, this env is {self.domain!r}")
        physics = np.asarray(state["physics"], dtype=np.float64)
        if physics.shape != (self._state_size,):
            raise ValueError(f"state['physics'] must have shape ({self._state_size},), got {physics.shape}")
        mujoco.mj_setState(self.model, self.data, physics, _STATE_SPEC)
        self._set_extra_state(copy.deepcopy(state))
        self._step_count = int(state.get("step_count", 0))
        if "rng" in state:
            self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        mujoco.mj_forward(self.model, self.data)

    def check_action(self, action: np.ndarray) -> np.ndarray:
        """Validate one action: float64 copy of shape (action_dim,), else ValueError."""
        names = ", ".join(self._action_names)
        try:
            a = np.array(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{self.domain} action must be a numeric array of shape ({self.action_dim},) [{names}], got {action!r}"
            ) from err
        if a.shape != (self.action_dim,):
            raise ValueError(
                f"{self.domain} action must have shape ({self.action_dim},) [{names}], got shape {a.shape}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            which = [self._action_names[i] for i in np.flatnonzero(bad)]
            raise ValueError(f"{self.domain} action has NaN or infinite values in {which}: {a.tolist()}")
        return self._validate_action(a)

    def sample_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`[n, action_dim]` float32 plausible command sequence starting from the current state.

        `rng` is a numpy Generator (an int seed or None is accepted too); the result depends only
        on the env's current state and the generator's state.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Free the renderer and its GL context; safe to call more than once."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()
        _LIVE_ENVS.discard(self)

    def __enter__(self) -> MujocoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(domain={self.domain!r}, seed={self.seed!r}, "
            f"image_size=({self.height}, {self.width}), action_dim={self.action_dim}, frame_rate={self.frame_rate})"
        )

    # --- subclass hooks ---------------------------------------------------------------------------

    def _build_xml(self) -> str:
        raise NotImplementedError

    def _init_sim(self) -> None:
        """Deterministic pre-reset state (the env can step before the first `reset`)."""
        mujoco.mj_forward(self.model, self.data)

    def _randomize(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        """Domain checks beyond shape/finiteness; default: saturate to the action limits."""
        return np.clip(action, self.action_low, self.action_high)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def _check_sample_args(self, n: int, rng: np.random.Generator | int | None) -> np.random.Generator:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if isinstance(rng, np.random.Generator):
            return rng
        return np.random.default_rng(rng)

    def _finish_actions(self, actions: np.ndarray) -> np.ndarray:
        """float64 [n, dim] -> float32 within the limits even after rounding to float32."""
        return to_float32_within(actions, self.action_low, self.action_high)


# --- signal helpers for sample_actions ------------------------------------------------------------


def to_float32_within(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Clip to [low, high] and cast to float32 without rounding past a limit."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    low32 = low.astype(np.float32)
    high32 = high.astype(np.float32)
    low32 = np.where(low32.astype(np.float64) < low, np.nextafter(low32, np.float32(np.inf)), low32)
    high32 = np.where(high32.astype(np.float64) > high, np.nextafter(high32, np.float32(-np.inf)), high32)
    out = np.clip(np.asarray(values, dtype=np.float64), low, high).astype(np.float32)
    return np.clip(out, low32, high32)


def ou_step(
    x: np.ndarray, mean: np.ndarray, theta: float, std: np.ndarray, dt: float, rng: np.random.Generator
) -> np.ndarray:
    """One exact Ornstein-Uhlenbeck transition over `dt`: mean reversion at rate `theta` (1/s)
    towards `mean`, stationary standard deviation `std`."""
    decay = np.exp(-theta * dt)
    return mean + (x - mean) * decay + np.asarray(std) * np.sqrt(1.0 - decay**2) * rng.standard_normal(np.shape(x))


def filtered_ou(
    rng: np.random.Generator,
    n: int,
    start: np.ndarray,
    mean: np.ndarray,
    theta: float,
    std: np.ndarray,
    dt: float,
    alpha: float = 0.3,
) -> np.ndarray:
    """`[n, dim]` smooth random walk: an Ornstein-Uhlenbeck process (rate `theta`, stationary std
    `std`) seen through a first-order low-pass (`alpha` per step), both starting at `start`.
    The filter removes the OU's per-step jitter, so consecutive changes are correlated."""
    start = np.asarray(start, dtype=np.float64)
    ou, out, y = start.copy(), np.empty((n, start.size)), start.copy()
    for i in range(n):
        ou = ou_step(ou, mean, theta, std, dt, rng)
        y = y + alpha * (ou - y)
        out[i] = y
    return out


def min_jerk(start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """`n` points of a minimum-jerk move from `start` (excluded) to `end` (the last point)."""
    tau = np.arange(1, n + 1, dtype=np.float64) / max(n, 1)
    s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    start = np.asarray(start, dtype=np.float64)
    return start + s[:, None] * (np.asarray(end, dtype=np.float64) - start)


def rate_limit(values: np.ndarray, start: np.ndarray, max_delta: np.ndarray) -> np.ndarray:
    """Limit every per-row change (from `start` for the first row) to +-max_delta."""
    out = np.empty_like(values, dtype=np.float64)
    prev = np.asarray(start, dtype=np.float64)
    for i, row in enumerate(values):
        prev = prev + np.clip(row - prev, -max_delta, max_delta)
        out[i] = prev
    return out


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi
