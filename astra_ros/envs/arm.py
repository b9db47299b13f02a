"""Arm domain: a 4-joint manipulator on a table with a few loose objects, seen by a fixed camera.

Links are coloured distinctly (red turret, orange upper arm, yellow forearm, blue wrist, a white
palm with one magenta and one cyan finger) so every joint's motion is visible. The arm is
gravity-compensated and its joints follow position targets through PD servos with torque limits; the
objects (cube, cylinder, ball, bar) are free bodies that the arm can push around.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from ._base import VISUAL_XML, MujocoEnv, min_jerk, ou_step, rate_limit

JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch")
JOINT_LOW = np.array([-2.0, -0.5, -0.4, -1.9])  # rad
JOINT_HIGH = np.array([2.0, 1.6, 2.4, 1.9])  # rad
MAX_SPEED = np.array([1.2, 1.2, 1.5, 2.0])  # rad/s, joint speeds sample_actions stays under
# Reaches and resting poses are drawn from this box (inside the limits) and kept above the table.
_PRIOR_LOW = np.array([-1.6, -0.2, 0.2, -1.2])
_PRIOR_HIGH = np.array([1.6, 1.3, 2.2, 1.8])

TABLE_TOP = 0.75  # m
# Sampled poses keep the elbow and wrist this far above the table top (m) and the fingertips just
# above it: low enough to nudge the objects now and then, never pressing into the table.
_PROBES = {"elbow": 0.12, "wrist": 0.08, "finger_l_tip": 0.025, "finger_r_tip": 0.025}
_BASE_XY = (-0.25, 0.0)
_OBJECT_REGION = ((0.0, 0.45), (-0.35, 0.35))  # x, y ranges objects are dropped in


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> str:
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


# name, MJCF geom (at the body origin), half height above the table top when resting
_OBJECTS = (
    ("cube", '<geom type="box" size="0.025 0.025 0.025" rgba="0.9 0.1 0.1 1" mass="0.08"/>', 0.025),
    ("can", '<geom type="cylinder" size="0.025 0.035" rgba="0.1 0.3 0.9 1" mass="0.08"/>', 0.035),
    (
        "ball",
        '<geom type="sphere" size="0.03" rgba="0.95 0.85 0.1 1" mass="0.06" condim="6" friction="1 0.01 0.005"/>',
        0.03,
    ),
    ("bar", '<geom type="box" size="0.05 0.018 0.018" rgba="0.1 0.7 0.3 1" mass="0.06"/>', 0.018),
)


class ArmEnv(MujocoEnv):
    """4-joint arm with position-controlled joints (modality "joints").

    Action: sensor_msgs/JointState positions, target angle in rad for each joint, in the order of
    `joint_names`:
      - shoulder_pan   (vertical axis, + turns left seen from above)  limits [-2.0, 2.0]
      - shoulder_lift  (horizontal axis, + tips the arm forward)       limits [-0.5, 1.6]
      - elbow          (+ bends the forearm forward/down)              limits [-0.4, 2.4]
      - wrist_pitch    (+ bends the hand forward/down)                 limits [-1.9, 1.9]
    All zero is the arm pointing straight up. Targets outside the limits are saturated. Each
    step holds the targets for 0.1 s (frame rate 10 Hz) = 50 physics steps of 2 ms; the servos
    (PD with torque limits, gravity compensated) reach a nearby target within about 0.2 s.
    """

    domain = "arm"
    modality = "joints"
    frame_rate = 10.0
    camera_name = "scene"
    _action_names = JOINT_NAMES
    action_low = JOINT_LOW
    action_high = JOINT_HIGH

    def __init__(self, seed: int = 0, image_size: int | tuple[int, int] = 64) -> None:
        super().__init__(seed=seed, image_size=image_size)
        self._fk = mujoco.MjData(self.model)  # scratch data for clearance checks
        self._probe_sites = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name) for name in _PROBES]
        self._probe_min_z = TABLE_TOP + np.array(list(_PROBES.values()))
        self._grip_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "grip")

    @property
    def joint_names(self) -> list[str]:
        return list(JOINT_NAMES)

    # --- scene ------------------------------------------------------------------------------------

    def _build_xml(self) -> str:
        # Close enough that a link is about a VAE token wide in a 64x64 frame: from further away (this
        # world's earlier view) the links were 4-5 pixels wide and two command sequences from one state
        # changed the frames about half as much. The hand may leave the top of the view on high reaches.
        cam_pos = np.array([0.45, -0.45, 1.3])
        xyaxes = _look_at_xyaxes(cam_pos, np.array([-0.15, 0.0, 1.1]))
        bx, by = _BASE_XY
        t = TABLE_TOP
        legs = "\n    ".join(
            f'<geom type="box" pos="{x} {y} {(t - 0.04) / 2}" size="0.03 0.03 {(t - 0.04) / 2}" material="wood"/>'
            for x in (-0.55, 0.55)
            for y in (-0.4, 0.4)
        )
        objects = "\n    ".join(
            f'<body name="{name}" pos="{0.1 + 0.1 * i} 0.2 {t + h}"><freejoint name="{name}"/>{geom}</body>'
            for i, (name, geom, h) in enumerate(_OBJECTS)
        )
        actuators = "\n    ".join(
            f'<position name="{j}" joint="{j}" kp="{kp}" kv="{kv}" forcerange="{-f} {f}" ctrlrange="{lo} {hi}"/>'
            for j, kp, kv, f, lo, hi in zip(
                JOINT_NAMES, (40, 60, 40, 15), (4, 6, 3.5, 1), (20, 40, 25, 10), JOINT_LOW, JOINT_HIGH, strict=True
            )
        )
        joint_ranges = dict(zip(JOINT_NAMES, zip(JOINT_LOW, JOINT_HIGH, strict=True), strict=True))

        def hinge(name: str, axis: str) -> str:
            lo, hi = joint_ranges[name]
            return f'<joint name="{name}" axis="{axis}" range="{lo} {hi}"/>'

        return f"""
<mujoco model="astra_arm">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast"/>
  {VISUAL_XML}
  <default>
    <joint damping="0.5" armature="0.02"/>
    <geom contype="1" conaffinity="3" friction="1 0.005 0.0001"/>
    <site group="4" size="0.01"/>  <!-- reference points for planning, not rendered -->
    <default class="link"><geom contype="2" conaffinity="1"/></default>
  </default>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.6 0.7 0.85" rgb2="0.95 0.95 1"
             width="128" height="128"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.6 0.6 0.58" rgb2="0.4 0.4 0.42"
             width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="2 2" texuniform="true"/>
    <texture name="wood" type="2d" builtin="checker" rgb1="0.72 0.55 0.38" rgb2="0.66 0.5 0.34"
             width="64" height="64"/>
    <material name="wood" texture="wood" texrepeat="6 6" texuniform="true"/>
    <material name="wall_back" rgba="0.55 0.7 0.82 1"/>
    <material name="wall_side" rgba="0.85 0.78 0.6 1"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.8 -0.6 3" dir="-0.25 0.2 -1" directional="true" castshadow="true"
           diffuse="0.6 0.6 0.6" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" size="3 3 0.1" material="floor"/>
    <geom name="wall_back" type="box" pos="-1.6 0 1.2" size="0.05 3 1.2" material="wall_back"/>
    <geom name="wall_side" type="box" pos="0 1.6 1.2" size="3 0.05 1.2" material="wall_side"/>
    <geom type="box" pos="-1.54 -0.5 1.3" size="0.01 0.35 0.25" rgba="0.95 0.95 0.95 1"/>
    <geom type="box" pos="0.6 1.54 1.1" size="0.3 0.01 0.3" rgba="0.2 0.25 0.35 1"/>
    <geom name="table" type="box" pos="0 0 {t - 0.02}" size="0.6 0.45 0.02" material="wood"/>
    {legs}
    <geom name="arm_base" type="cylinder" pos="{bx} {by} {t + 0.02}" size="0.09 0.02" rgba="0.25 0.25 0.28 1"/>
    <body name="link1" pos="{bx} {by} {t + 0.04}" gravcomp="1" childclass="link">
      {hinge("shoulder_pan", "0 0 1")}
      <geom type="cylinder" fromto="0 0 0 0 0 0.1" size="0.055" rgba="0.85 0.15 0.12 1" mass="0.8"/>
      <body name="link2" pos="0 0 0.12" gravcomp="1">
        {hinge("shoulder_lift", "0 1 0")}
        <geom type="cylinder" fromto="0 -0.05 0 0 0.05 0" size="0.05" rgba="0.2 0.2 0.22 1" mass="0.2"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.28" size="0.04" rgba="1 0.55 0.1 1" mass="1.0"/>
        <body name="link3" pos="0 0 0.28" gravcomp="1">
          {hinge("elbow", "0 1 0")}
          <site name="elbow"/>
          <geom type="cylinder" fromto="0 -0.042 0 0 0.042 0" size="0.042" rgba="0.2 0.2 0.22 1" mass="0.15"/>
          <geom type="capsule" fromto="0 0 0 0 0 0.24" size="0.032" rgba="0.95 0.88 0.15 1" mass="0.6"/>
          <body name="link4" pos="0 0 0.24" gravcomp="1">
            {hinge("wrist_pitch", "0 1 0")}
            <site name="wrist"/>
            <geom type="capsule" fromto="0 0 0 0 0 0.07" size="0.028" rgba="0.15 0.35 0.9 1" mass="0.3"/>
            <geom type="box" pos="0 0 0.09" size="0.022 0.055 0.015" rgba="0.92 0.92 0.92 1" mass="0.1"/>
            <geom type="box" pos="0 0.04 0.14" size="0.012 0.01 0.04" rgba="0.9 0.15 0.75 1" mass="0.03"/>
            <geom type="box" pos="0 -0.04 0.14" size="0.012 0.01 0.04" rgba="0.1 0.8 0.85 1" mass="0.03"/>
            <site name="grip" pos="0 0 0.16"/>
            <site name="finger_l_tip" pos="0 0.04 0.18"/>
            <site name="finger_r_tip" pos="0 -0.04 0.18"/>
          </body>
        </body>
      </body>
    </body>
    {objects}
    <camera name="scene" pos="{cam_pos[0]} {cam_pos[1]} {cam_pos[2]}" xyaxes="{xyaxes}" fovy="50"/>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""

    # --- helpers ----------------------------------------------------------------------------------

    def _clear_of_table(self, q: np.ndarray, lift: float = 0.0) -> bool:
        """Whether the elbow, wrist and fingertips are `_PROBES` (+ lift) above the table at angles q."""
        self._fk.qpos[:4] = q
        mujoco.mj_kinematics(self.model, self._fk)
        return bool(np.all(self._fk.site_xpos[self._probe_sites, 2] > self._probe_min_z + lift))

    def _random_pose(self, rng: np.random.Generator, lift: float = 0.0) -> np.ndarray:
        for _ in range(1000):
            q = rng.uniform(_PRIOR_LOW, _PRIOR_HIGH)
            if self._clear_of_table(q, lift):
                return q
        raise RuntimeError("could not sample an arm pose clear of the table")  # pragma: no cover

    def _pose_near(self, point: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Joint angles that put the grip point (between the fingers) near `point`, by random search:
        the best of a batch of clear random poses, refined by shrinking random perturbations."""
        best, best_err = None, np.inf
        for scale in (None, 0.3, 0.15, 0.07, 0.03):
            for _ in range(60 if scale is None else 25):
                if scale is None:
                    q = rng.uniform(_PRIOR_LOW, _PRIOR_HIGH)
                else:
                    q = self._clip(best + scale * rng.standard_normal(4))
                if not self._clear_of_table(q):
                    continue
                err = float(np.linalg.norm(self._fk.site_xpos[self._grip_site] - point))
                if err < best_err:
                    best, best_err = q, err
            if best is None:
                return None
        return best if best_err < 0.05 else None

    # --- MujocoEnv hooks --------------------------------------------------------------------------

    def _init_sim(self) -> None:
        home = np.array([0.0, 0.5, 1.2, 0.9])
        self.data.qpos[:4] = home
        self.data.ctrl[:] = home
        mujoco.mj_forward(self.model, self.data)

    def _randomize(self, rng: np.random.Generator) -> None:
        q = self._random_pose(rng, lift=0.1)  # start well above the objects
        self.data.qpos[:4] = q
        self.data.ctrl[:] = q
        # Drop the objects at random non-overlapping spots on the table, randomly turned.
        placed: list[np.ndarray] = []
        (x0, x1), (y0, y1) = _OBJECT_REGION
        for i, (_name, _geom, half_height) in enumerate(_OBJECTS):
            while True:
                xy = rng.uniform([x0, y0], [x1, y1])
                if all(np.linalg.norm(xy - p) > 0.11 for p in placed):
                    break
            placed.append(xy)
            yaw = rng.uniform(-np.pi, np.pi)
            adr = 4 + 7 * i
            self.data.qpos[adr : adr + 7] = (*xy, TABLE_TOP + half_height, math.cos(yaw / 2), 0, 0, math.sin(yaw / 2))
        # Let contacts settle so the first frames show no drop transient.
        for _ in range(25):
            mujoco.mj_step(self.model, self.data)
        self.data.time = 0.0

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        mujoco.mj_forward(self.model, self.data)  # positions for rendering at the end of the period

    # --- command generator ------------------------------------------------------------------------

    def _clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, JOINT_LOW, JOINT_HIGH)

    def _reach(self, rng: np.random.Generator, q: np.ndarray, to_object: bool = False) -> np.ndarray:
        """Minimum-jerk move to a random pose, or to just above one of the objects (to_object)."""
        for _ in range(10):
            if to_object:
                positions = self.data.qpos[4:].reshape(len(_OBJECTS), 7)[:, :3]
                on_table = np.flatnonzero(positions[:, 2] > TABLE_TOP)  # ignore anything knocked off
                if on_table.size == 0:
                    break
                target = self._pose_near(positions[rng.choice(on_table)] + np.array([0.0, 0.0, 0.04]), rng)
                if target is None:
                    continue
            else:
                target = self._random_pose(rng)
            n = max(5, math.ceil(np.max(np.abs(target - q) / MAX_SPEED) * self.frame_rate * rng.uniform(1.3, 2.0)))
            path = min_jerk(q, target, n)
            if all(self._clear_of_table(p) for p in path[::2]):
                hold = np.repeat(target[None], int(rng.integers(0, 6)), axis=0)
                return np.concatenate([path, hold])
        return np.repeat(q[None], 5, axis=0)

    def _wander(self, rng: np.random.Generator, q: np.ndarray) -> np.ndarray:
        """Integrated Ornstein-Uhlenbeck joint velocities: smooth, random, bounced off limits and table."""
        n = int(rng.integers(15, 40))
        vel = np.zeros(4)
        out = np.empty((n, 4))
        for i in range(n):
            vel = ou_step(vel, 0.0, 1.5, 0.5 * MAX_SPEED, self.frame_dt, rng)
            nxt = q + vel * self.frame_dt
            outside = (nxt < _PRIOR_LOW) | (nxt > _PRIOR_HIGH)
            vel[outside] *= -1
            nxt = self._clip(q + vel * self.frame_dt)
            if self._clear_of_table(nxt):
                q = nxt
            else:
                vel = -vel
            out[i] = q
        return out

    def _sweep(self, rng: np.random.Generator, q: np.ndarray) -> np.ndarray:
        """Smooth swing of one or two joints: q0 + A (1 - cos(2 pi f t)) / 2, starting at rest."""
        n = int(rng.integers(15, 40))
        joints = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
        amp = rng.uniform(0.4, 1.2, size=len(joints)) * rng.choice([-1, 1], size=len(joints))
        freq = rng.uniform(0.15, 0.4, size=len(joints))
        t = np.arange(1, n + 1) * self.frame_dt
        out = np.empty((n, 4))
        for i in range(n):
            cand = q.copy()
            cand[joints] += amp * (1.0 - np.cos(2 * np.pi * freq * t[i])) / 2
            cand = self._clip(cand)
            out[i] = cand if self._clear_of_table(cand) else (out[i - 1] if i else q)
        return out

    def sample_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n, 4] float32 joint targets (rad): minimum-jerk reaches to random poses above the table
        and to just above the objects (often nudging them), Ornstein-Uhlenbeck wandering, smooth
        swings of one or two joints, and holds, starting from the current joint targets. Joint
        speeds stay under MAX_SPEED (1.2, 1.2, 1.5, 2.0 rad/s), targets within the joint limits,
        and the elbow, wrist and fingertips above the table (the fingers may brush the objects).
        Deterministic for a given env state and `rng` state.
        """
        rng = self._check_sample_args(n, rng)
        q = self._clip(self.data.ctrl[:4].copy())
        chunks, total = [], 0
        while total < n:
            kind = rng.choice(["reach", "reach_object", "wander", "sweep", "hold"], p=[0.3, 0.2, 0.25, 0.15, 0.1])
            if kind in ("reach", "reach_object"):
                seg = self._reach(rng, q, to_object=kind == "reach_object")
            elif kind == "wander":
                seg = self._wander(rng, q)
            elif kind == "sweep":
                seg = self._sweep(rng, q)
            else:
                seg = np.repeat(q[None], int(rng.integers(3, 10)), axis=0)
            chunks.append(seg)
            total += len(seg)
            q = seg[-1]
        out = np.concatenate(chunks)[:n] if chunks else np.zeros((0, 4))
        # Guarantee the speed bound at segment joins.
        start = self._clip(self.data.ctrl[:4].copy())
        return self._finish_actions(rate_limit(out, start, MAX_SPEED * self.frame_dt))
