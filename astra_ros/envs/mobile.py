"""Mobile domain: a differential-drive robot with a forward-facing camera in a walled arena.

The arena is 8 m x 8 m with a checker floor, four differently coloured and textured walls (each with
its own decoration) and landmarks of distinct colours and shapes: pillars, a banded pole, boxes,
stacked crates, a ball, a cone and a gate the robot can drive through.

The base is driven kinematically (deterministic): the commanded body velocities are tracked with
acceleration limits, integrated as a unicycle, and the robot's 0.27 m footprint is pushed out of
walls and landmarks (it slides along them instead of passing through).
"""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np

from ._base import VISUAL_XML, MujocoEnv, filtered_ou, wrap_angle

HALF_ARENA = 4.0  # m, the arena spans [-4, 4] x [-4, 4]
ROBOT_RADIUS = 0.27  # m, collision footprint of the base
WALL_HEIGHT = 1.5

V_MIN, V_MAX = -0.5, 1.0  # m/s, forward speed limits
W_MAX = 1.5  # rad/s, yaw rate limit
LIN_ACCEL = 1.5  # m/s^2, how fast the base follows the commanded speed
ANG_ACCEL = 5.0  # rad/s^2

_RED, _GREEN, _BLUE = "0.85 0.12 0.1 1", "0.1 0.6 0.2 1", "0.15 0.3 0.85 1"
_YELLOW, _ORANGE, _PURPLE = "0.95 0.8 0.1 1", "1 0.45 0.05 1", "0.55 0.2 0.7 1"
_TEAL, _PINK, _BROWN = "0.1 0.65 0.65 1", "0.95 0.45 0.65 1", "0.55 0.35 0.18 1"


def _cone_mesh(radius: float, height: float, sides: int = 16) -> str:
    angles = np.arange(sides) * 2 * np.pi / sides
    ring = [f"{radius * math.cos(t):.4f} {radius * math.sin(t):.4f} 0" for t in angles]
    return f'<mesh name="cone" vertex="{" ".join(ring)} 0 0 {height}"/>'


def _layout() -> tuple[str, np.ndarray, np.ndarray]:
    """Landmark geoms (MJCF) plus their 2-D footprints: circles [x, y, r], rectangles [x, y, hx, hy, yaw]."""
    geoms: list[str] = []
    circles: list[tuple[float, ...]] = []
    rects: list[tuple[float, ...]] = []

    def cylinder(x: float, y: float, r: float, h: float, rgba: str, z0: float = 0.0) -> None:
        geoms.append(f'<geom type="cylinder" pos="{x} {y} {z0 + h / 2}" size="{r} {h / 2}" rgba="{rgba}"/>')

    def box(x: float, y: float, hx: float, hy: float, hz: float, yaw: float, rgba: str, z0: float = 0.0) -> None:
        geoms.append(
            f'<geom type="box" pos="{x} {y} {z0 + hz}" size="{hx} {hy} {hz}" euler="0 0 {yaw}" rgba="{rgba}"/>'
        )

    # red pillar
    cylinder(2.3, 2.2, 0.3, 1.4, _RED)
    circles.append((2.3, 2.2, 0.3))
    # thin green pole
    cylinder(-2.6, -1.2, 0.12, 2.0, _GREEN)
    circles.append((-2.6, -1.2, 0.12))
    # black-and-white banded pole
    for i in range(6):
        cylinder(3.0, 0.2, 0.2, 0.25, "0.08 0.08 0.08 1" if i % 2 else "0.95 0.95 0.95 1", z0=0.25 * i)
    circles.append((3.0, 0.2, 0.2))
    # blue box, turned
    box(-2.2, 2.4, 0.35, 0.35, 0.45, 0.5, _BLUE)
    rects.append((-2.2, 2.4, 0.35, 0.35, 0.5))
    # long purple bench
    box(-0.3, -2.6, 1.0, 0.2, 0.3, 0.0, _PURPLE)
    rects.append((-0.3, -2.6, 1.0, 0.2, 0.0))
    # stacked brown crates, the top one rotated
    box(1.2, -1.0, 0.3, 0.3, 0.3, 0.2, _BROWN)
    box(1.2, -1.0, 0.22, 0.22, 0.2, 0.9, "0.75 0.55 0.3 1", z0=0.6)
    rects.append((1.2, -1.0, 0.3, 0.3, 0.2))
    # yellow ball
    geoms.append(f'<geom type="sphere" pos="2.4 -2.3 0.35" size="0.35" rgba="{_YELLOW}"/>')
    circles.append((2.4, -2.3, 0.35))
    # orange traffic cone on a dark base
    geoms.append(f'<geom type="mesh" mesh="cone" pos="0.6 1.2 0.04" rgba="{_ORANGE}"/>')
    box(0.6, 1.2, 0.32, 0.32, 0.02, 0.0, "0.15 0.15 0.15 1")
    circles.append((0.6, 1.2, 0.34))
    # gate: two teal posts and a pink lintel, passable between the posts
    for y in (0.2, 1.6):
        cylinder(-1.2, y, 0.1, 1.2, _TEAL)
        circles.append((-1.2, y, 0.1))
    box(-1.2, 0.9, 0.12, 0.82, 0.1, 0.0, _PINK, z0=1.2)
    return "\n    ".join(geoms), np.array(circles), np.array(rects)


def _wall_decorations() -> str:
    """Flat panels on the walls so each wall is recognisable from its decoration as well as colour."""
    h = HALF_ARENA - 0.06
    return "\n    ".join(
        [
            # north: a white door and a dark window
            f'<geom type="box" pos="-1.5 {h} 0.6" size="0.45 0.02 0.6" rgba="0.97 0.97 0.95 1"/>',
            f'<geom type="box" pos="1.8 {h} 0.85" size="0.6 0.02 0.3" rgba="0.1 0.15 0.25 1"/>',
            # east: a big black square and a small yellow one
            f'<geom type="box" pos="{h} -1.0 0.75" size="0.02 0.5 0.5" rgba="0.05 0.05 0.05 1"/>',
            f'<geom type="box" pos="{h} 2.0 1.0" size="0.02 0.25 0.25" rgba="{_YELLOW}"/>',
            # south: a horizontal white stripe
            f'<geom type="box" pos="1.0 {-h} 0.9" size="1.8 0.02 0.12" rgba="0.95 0.95 0.95 1"/>',
            # west: two round targets
            f'<geom type="cylinder" pos="{-h} 0.8 0.8" size="0.3 0.02" euler="0 1.5708 0" rgba="{_RED}"/>',
            f'<geom type="cylinder" pos="{-h} -2.0 0.8" size="0.3 0.02" euler="0 1.5708 0" rgba="{_BLUE}"/>',
        ]
    )


class MobileEnv(MujocoEnv):
    """Differential-drive robot seen through its onboard forward camera (modality "twist").

    Action: geometry_msgs/Twist as 6 floats
      [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]
      - linear.x  forward speed in m/s, limits [-0.5, 1.0]
      - angular.z yaw rate in rad/s (counter-clockwise positive), limits [-1.5, 1.5]
      - linear.y, linear.z, angular.x, angular.y: m/s and rad/s, ignored by the robot (a
        differential drive cannot follow them); any finite value is accepted, sample_actions
        gives 0.
    Commands outside the limits are saturated. The base follows the command with acceleration
    limits of 1.5 m/s^2 and 5 rad/s^2, so a command is reached within a few frames.
    Frame rate 10 Hz: each step simulates 0.1 s in 10 kinematic substeps of 10 ms.
    Camera: 0.35 m above the floor, 8 degrees down, 80 degree vertical field of view.
    """

    domain = "mobile"
    modality = "twist"
    frame_rate = 10.0
    camera_name = "onboard"
    _action_names = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
    action_low = np.array([V_MIN, 0.0, 0.0, 0.0, 0.0, -W_MAX])
    action_high = np.array([V_MAX, 0.0, 0.0, 0.0, 0.0, W_MAX])

    def __init__(self, seed: int = 0, image_size: int | tuple[int, int] = 64) -> None:
        self._landmark_xml, self._circles, self._rects = _layout()
        self._velocity = np.zeros(2)  # [v, w] the base currently moves with
        super().__init__(seed=seed, image_size=image_size)

    # --- scene ------------------------------------------------------------------------------------

    def _build_xml(self) -> str:
        pitch = math.radians(8.0)
        s, c = math.sin(pitch), math.cos(pitch)
        h = HALF_ARENA
        t = 0.1  # wall half thickness
        hz = WALL_HEIGHT / 2
        return f"""
<mujoco model="astra_mobile">
  <compiler angle="radian"/>
  <option timestep="0.01" gravity="0 0 0"/>
  {VISUAL_XML}
  <default><geom contype="0" conaffinity="0"/></default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.7 0.9" rgb2="0.95 0.97 1"
             width="128" height="128"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.78 0.78 0.74" rgb2="0.42 0.44 0.48"
             width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="2 2" texuniform="true"/>
    <texture name="wall_n" type="2d" builtin="checker" rgb1="0.8 0.3 0.25" rgb2="0.68 0.24 0.2"
             width="64" height="64"/>
    <texture name="wall_s" type="2d" builtin="checker" rgb1="0.3 0.45 0.8" rgb2="0.24 0.36 0.68"
             width="64" height="64"/>
    <texture name="wall_e" type="2d" builtin="checker" rgb1="0.35 0.72 0.35" rgb2="0.27 0.6 0.28"
             width="64" height="64"/>
    <texture name="wall_w" type="2d" builtin="checker" rgb1="0.9 0.8 0.35" rgb2="0.78 0.68 0.27"
             width="64" height="64"/>
    <material name="wall_n" texture="wall_n" texrepeat="1 1" texuniform="true"/>
    <material name="wall_s" texture="wall_s" texrepeat="1 1" texuniform="true"/>
    <material name="wall_e" texture="wall_e" texrepeat="1 1" texuniform="true"/>
    <material name="wall_w" texture="wall_w" texrepeat="1 1" texuniform="true"/>
    {_cone_mesh(0.28, 0.75)}
  </asset>
  <worldbody>
    <light name="sun" pos="1 -1 6" dir="-0.2 0.2 -1" directional="true" castshadow="true"
           diffuse="0.6 0.6 0.6" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" size="{h} {h} 0.1" material="floor"/>
    <geom name="wall_n" type="box" pos="0 {h + t} {hz}" size="{h + 2 * t} {t} {hz}" material="wall_n"/>
    <geom name="wall_s" type="box" pos="0 {-h - t} {hz}" size="{h + 2 * t} {t} {hz}" material="wall_s"/>
    <geom name="wall_e" type="box" pos="{h + t} 0 {hz}" size="{t} {h} {hz}" material="wall_e"/>
    <geom name="wall_w" type="box" pos="{-h - t} 0 {hz}" size="{t} {h} {hz}" material="wall_w"/>
    {_wall_decorations()}
    {self._landmark_xml}
    <body name="base">
      <joint name="base_x" type="slide" axis="1 0 0"/>
      <joint name="base_y" type="slide" axis="0 1 0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1"/>
      <geom type="box" pos="0 0 0.12" size="0.22 0.17 0.06" rgba="0.92 0.92 0.9 1" mass="8"/>
      <geom type="cylinder" pos="0 0.19 0.08" size="0.08 0.025" euler="1.5708 0 0" rgba="0.1 0.1 0.1 1"/>
      <geom type="cylinder" pos="0 -0.19 0.08" size="0.08 0.025" euler="1.5708 0 0" rgba="0.1 0.1 0.1 1"/>
      <geom type="cylinder" pos="0.1 0 0.26" size="0.025 0.08" rgba="0.3 0.3 0.3 1"/>
      <camera name="onboard" pos="0.2 0 0.35" xyaxes="0 -1 0 {s:.6f} 0 {c:.6f}" fovy="80"/>
    </body>
  </worldbody>
</mujoco>
"""

    # --- kinematics -------------------------------------------------------------------------------

    def _penetration_push(self, x: float, y: float) -> tuple[float, float]:
        """Move the footprint centre (x, y) out of every landmark and inside the walls."""
        for _ in range(2):  # a second pass settles pushes between two close obstacles
            d = np.hypot(x - self._circles[:, 0], y - self._circles[:, 1])
            for i in np.flatnonzero(d < self._circles[:, 2] + ROBOT_RADIUS):
                cx, cy, r = self._circles[i]
                dist = max(float(d[i]), 1e-9)
                push = r + ROBOT_RADIUS - dist
                x += (x - cx) / dist * push
                y += (y - cy) / dist * push
            for cx, cy, hx, hy, yaw in self._rects:
                cs, sn = math.cos(yaw), math.sin(yaw)
                lx = cs * (x - cx) + sn * (y - cy)  # into the box frame
                ly = -sn * (x - cx) + cs * (y - cy)
                qx, qy = min(max(lx, -hx), hx), min(max(ly, -hy), hy)  # closest box point
                dx, dy = lx - qx, ly - qy
                dist = math.hypot(dx, dy)
                if dist >= ROBOT_RADIUS:
                    continue
                if dist > 1e-9:
                    lx, ly = qx + dx / dist * ROBOT_RADIUS, qy + dy / dist * ROBOT_RADIUS
                elif hx - abs(lx) < hy - abs(ly):  # centre inside the box: leave by the nearest face
                    lx = math.copysign(hx + ROBOT_RADIUS, lx)
                else:
                    ly = math.copysign(hy + ROBOT_RADIUS, ly)
                x, y = cx + cs * lx - sn * ly, cy + sn * lx + cs * ly
            lim = HALF_ARENA - ROBOT_RADIUS
            x, y = min(max(x, -lim), lim), min(max(y, -lim), lim)
        return x, y

    def _advance(
        self, pose: tuple[float, float, float], vel: tuple[float, float], cmd: tuple[float, float]
    ) -> tuple[tuple[float, float, float], tuple[float, float]]:
        """One control period: `substeps` unicycle substeps with acceleration limits and collisions."""
        x, y, yaw = pose
        v, w = vel
        dt = self.model.opt.timestep
        dv_max, dw_max = LIN_ACCEL * dt, ANG_ACCEL * dt
        for _ in range(self.substeps):
            v += min(max(cmd[0] - v, -dv_max), dv_max)
            w += min(max(cmd[1] - w, -dw_max), dw_max)
            mid = yaw + 0.5 * w * dt
            x, y = self._penetration_push(x + v * math.cos(mid) * dt, y + v * math.sin(mid) * dt)
            yaw = float(wrap_angle(yaw + w * dt))
        return (x, y, yaw), (v, w)

    def _clear(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether the robot footprint (radius shrunk by `margin`) centred at each (x, y) touches nothing."""
        radius = ROBOT_RADIUS - margin
        ok = (np.abs(x) <= HALF_ARENA - radius) & (np.abs(y) <= HALF_ARENA - radius)
        for cx, cy, r in self._circles:
            ok &= np.hypot(x - cx, y - cy) >= r + radius
        for cx, cy, hx, hy, yaw in self._rects:
            cs, sn = math.cos(yaw), math.sin(yaw)
            lx = np.abs(cs * (x - cx) + sn * (y - cy)) - hx
            ly = np.abs(-sn * (x - cx) + cs * (y - cy)) - hy
            ok &= np.hypot(np.maximum(lx, 0), np.maximum(ly, 0)) >= radius
        return ok

    def _clearance(self, x: float, y: float, heading: float, max_range: float = 2.5) -> float:
        """Free distance (m) the robot can travel along `heading` before touching anything."""
        d = np.arange(0.1, max_range + 1e-9, 0.1)
        ok = self._clear(x + d * math.cos(heading), y + d * math.sin(heading))
        blocked = np.flatnonzero(~ok)
        return float(d[blocked[0]] - 0.1) if blocked.size else max_range

    # --- MujocoEnv hooks --------------------------------------------------------------------------

    def _pose(self) -> tuple[float, float, float]:
        x, y, yaw = self.data.qpos[:3]
        return float(x), float(y), float(yaw)

    def _write(self, pose: tuple[float, float, float], vel: tuple[float, float]) -> None:
        yaw = pose[2]
        v, w = vel
        self.data.qpos[:3] = pose
        self.data.qvel[:3] = (v * math.cos(yaw), v * math.sin(yaw), w)
        self._velocity[:] = vel

    def _init_sim(self) -> None:
        self._write((-1.0, -1.5, 0.0), (0.0, 0.0))
        mujoco.mj_forward(self.model, self.data)

    def _randomize(self, rng: np.random.Generator) -> None:
        lim = HALF_ARENA - ROBOT_RADIUS - 0.2
        ring = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        while True:
            x, y = rng.uniform(-lim, lim, size=2)
            # a 0.3 m margin so the robot does not start touching a landmark
            if self._clear(x + 0.3 * np.cos(ring), y + 0.3 * np.sin(ring)).all():
                break
        # Face somewhere with at least 1 m of free floor ahead rather than into a wall.
        for _ in range(50):
            yaw = float(rng.uniform(-np.pi, np.pi))
            if self._clearance(float(x), float(y), yaw) >= 1.0:
                break
        self._write((float(x), float(y), yaw), (0.0, 0.0))

    def _apply_action(self, action: np.ndarray) -> None:
        cmd = (float(action[0]), float(action[5]))
        pose, vel = self._advance(self._pose(), (float(self._velocity[0]), float(self._velocity[1])), cmd)
        self._write(pose, vel)
        self.data.time += self.substeps * self.model.opt.timestep
        mujoco.mj_forward(self.model, self.data)

    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        out = action.copy()  # unused Twist components pass through untouched
        out[0] = min(max(out[0], V_MIN), V_MAX)
        out[5] = min(max(out[5], -W_MAX), W_MAX)
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"base_velocity": self._velocity.copy()}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._velocity[:] = np.asarray(state["base_velocity"], dtype=np.float64)

    # --- command generator ------------------------------------------------------------------------

    def _segment(self, rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
        """Nominal [v, w] commands of one manoeuvre, before rate limiting and obstacle avoidance."""
        kind = rng.choice(
            ["cruise", "straight", "arc", "spin", "stop", "reverse"], p=[0.35, 0.2, 0.2, 0.12, 0.05, 0.08]
        )
        if kind == "cruise":  # filtered Ornstein-Uhlenbeck wandering around a cruising speed
            mean = np.array([rng.uniform(0.3, 0.8), rng.uniform(-0.2, 0.2)])
            n = int(rng.integers(20, 60))
            return filtered_ou(rng, n, start, mean, 1.0, np.array([0.25, 0.7]), self.frame_dt)
        if kind == "straight":
            return np.tile([rng.uniform(0.4, V_MAX), 0.0], (int(rng.integers(10, 30)), 1))
        if kind == "arc":
            w = rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)
            return np.tile([rng.uniform(0.2, 0.7), w], (int(rng.integers(10, 30)), 1))
        if kind == "spin":
            w = rng.choice([-1, 1]) * rng.uniform(0.8, W_MAX)
            n = max(4, round(rng.uniform(np.pi / 4, np.pi) / abs(w) * self.frame_rate))
            return np.tile([0.0, w], (n, 1))
        if kind == "stop":
            return np.zeros((int(rng.integers(3, 10)), 2))
        return np.tile([rng.uniform(-0.4, -0.15), rng.uniform(-0.3, 0.3)], (int(rng.integers(5, 12)), 1))

    def sample_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n, 6] float32 Twist commands: manoeuvres (cruise with Ornstein-Uhlenbeck wandering,
        straight drives, arcs, turns on the spot, stops, short reversals) joined by per-frame rate
        limits (0.15 m/s and 0.3 rad/s per frame). The sequence starts from the base's current
        velocity and pose: the robot's kinematics are rolled out along the way, and when an
        obstacle or wall comes close ahead the robot slows and turns towards the more open side.
        Deterministic for a given env state and `rng` state.
        """
        rng = self._check_sample_args(n, rng)
        pose = self._pose()
        vel = (float(self._velocity[0]), float(self._velocity[1]))
        cmd = np.array(vel)
        max_delta = np.array([0.15, 0.3])
        out = np.zeros((n, self.action_dim))
        plan = np.zeros((0, 2))
        avoiding, avoid_dir, avoid_frames = False, 1.0, 0
        for i in range(n):
            x, y, yaw = pose
            ahead = self._clearance(x, y, yaw)
            if avoiding:  # turn towards open space until the way ahead is clear (or for at most 2 s)
                avoid_frames += 1
                avoiding = ahead < 1.5 and avoid_frames < 20
            if not avoiding and len(plan) == 0:
                plan = self._segment(rng, cmd)
            nominal = plan[0] if len(plan) else np.zeros(2)
            if not avoiding and nominal[0] > 0.05 and ahead < 0.3 + 1.2 * max(nominal[0], cmd[0]):
                left, right = self._clearance(x, y, yaw + 0.8), self._clearance(x, y, yaw - 0.8)
                avoiding, avoid_dir, avoid_frames, plan = True, (1.0 if left >= right else -1.0), 0, plan[:0]
            if avoiding:
                nominal = np.array([0.25 if ahead > 0.6 else 0.0, avoid_dir * 1.0])
            else:
                plan = plan[1:]
                if nominal[0] < -0.05 and self._clearance(x, y, yaw + np.pi) < 0.5:
                    nominal = np.array([0.0, nominal[1]])
            cmd = cmd + np.clip(nominal - cmd, -max_delta, max_delta)
            cmd = np.clip(cmd, [V_MIN, -W_MAX], [V_MAX, W_MAX])
            pose, vel = self._advance(pose, vel, (float(cmd[0]), float(cmd[1])))
            out[i, 0], out[i, 5] = cmd
        return self._finish_actions(out)
