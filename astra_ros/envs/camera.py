"""Camera domain: a free camera flying through a furnished room.

The room is 6 m x 5 m x 2.6 m with four differently coloured walls, a wooden floor and a ceiling
lamp. Furniture: a dining table with a vase, fruit bowl, book and mug on a rug, three chairs of
different colours, a bookshelf full of books (west wall), a sofa with cushions under a window
(north wall), a TV on a cabinet (east wall), a door and a painting (south wall), a dresser, a floor
lamp and a potted plant. The camera is a mocap body that is placed at the commanded pose.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from ._base import VISUAL_XML, MujocoEnv, filtered_ou, min_jerk, ou_step, rate_limit, wrap_angle

HALF_X, HALF_Y, HEIGHT = 3.0, 2.5, 2.6  # room interior, m
# Any commanded position is clipped into this box (10-20 cm inside walls, floor and ceiling).
POS_LOW = np.array([-2.8, -2.3, 0.2])
POS_HIGH = np.array([2.8, 2.3, 2.4])
# sample_actions keeps the camera in this furniture-free box (above the table and chair backs).
FREE_LOW = np.array([-2.0, -1.6, 1.05])
FREE_HIGH = np.array([2.1, 1.5, 1.9])
PITCH_RANGE = (-0.5, 0.9)  # rad, positive looks down (ROS: rotation about +y tips +x downward)
# Per-frame limits of sample_actions at 10 Hz: 0.8 m/s, 1.2 rad/s yaw, 0.6 rad/s pitch, 0.3 rad/s roll.
_STEP_LIMIT = np.array([0.08, 0.08, 0.08, 0.12, 0.06, 0.03])

# Things worth looking at (orbits and dollies aim at these).
_POINTS_OF_INTEREST = np.array(
    [
        [0.4, -0.2, 0.85],  # table
        [-2.7, 0.2, 1.0],  # bookshelf
        [-0.8, 2.1, 0.5],  # sofa
        [2.8, 0.3, 0.95],  # TV
        [1.6, 2.45, 1.5],  # window
        [-1.8, -2.45, 1.0],  # door
        [0.8, -2.45, 1.5],  # painting
        [-2.6, -2.1, 0.6],  # plant
        [2.6, 2.1, 1.3],  # floor lamp
    ]
)


def _body(name: str, x: float, y: float, yaw: float, geoms: list[str]) -> str:
    inner = "\n      ".join(geoms)
    return f'<body name="{name}" pos="{x} {y} 0" euler="0 0 {yaw}">\n      {inner}\n    </body>'


def _box(pos: tuple[float, float, float], size: tuple[float, float, float], rgba: str, extra: str = "") -> str:
    px, py, pz = pos
    sx, sy, sz = size
    return f'<geom type="box" pos="{px} {py} {pz}" size="{sx} {sy} {sz}" rgba="{rgba}"{extra}/>'


def _cyl(pos: tuple[float, float, float], r: float, half_h: float, rgba: str, extra: str = "") -> str:
    return f'<geom type="cylinder" pos="{pos[0]} {pos[1]} {pos[2]}" size="{r} {half_h}" rgba="{rgba}"{extra}/>'


def _table(x: float, y: float) -> str:
    wood = "0.45 0.28 0.15 1"
    geoms = [_box((0, 0, 0.725), (0.7, 0.4, 0.025), wood)]
    geoms += [_box((sx * 0.64, sy * 0.34, 0.35), (0.03, 0.03, 0.35), wood) for sx in (-1, 1) for sy in (-1, 1)]
    # vase with a flower, fruit bowl, book, mug
    geoms += [
        _cyl((-0.3, 0.05, 0.875), 0.05, 0.125, "0.2 0.35 0.8 1"),
        '<geom type="sphere" pos="-0.3 0.05 1.02" size="0.05" rgba="0.95 0.3 0.5 1"/>',
        _cyl((0.15, 0.1, 0.77), 0.12, 0.02, "0.95 0.95 0.92 1"),
        '<geom type="sphere" pos="0.11 0.08 0.82" size="0.04" rgba="1 0.55 0.05 1"/>',
        '<geom type="sphere" pos="0.19 0.13 0.82" size="0.04" rgba="0.8 0.1 0.1 1"/>',
        '<geom type="ellipsoid" pos="0.16 0.04 0.81" size="0.07 0.025 0.025" rgba="0.95 0.85 0.2 1"/>',
        _box((0.45, -0.15, 0.765), (0.12, 0.09, 0.015), "0.15 0.55 0.3 1", ' euler="0 0 0.3"'),
        _cyl((0.5, 0.18, 0.8), 0.035, 0.05, "0.85 0.15 0.15 1"),
    ]
    return _body("table", x, y, 0.0, geoms)


def _chair(name: str, x: float, y: float, yaw: float, rgba: str) -> str:
    """A chair whose back is on its local +y side (yaw turns it)."""
    geoms = [_box((0, 0, 0.45), (0.22, 0.22, 0.025), rgba), _box((0, 0.2, 0.72), (0.22, 0.025, 0.25), rgba)]
    geoms += [_cyl((sx * 0.18, sy * 0.18, 0.215), 0.02, 0.215, "0.2 0.2 0.2 1") for sx in (-1, 1) for sy in (-1, 1)]
    return _body(name, x, y, yaw, geoms)


def _bookshelf(x: float, y: float) -> str:
    """Shelf against the west wall, open towards +x, with a fixed pseudo-random set of books."""
    wood = "0.6 0.42 0.25 1"
    geoms = [_box((-0.16, 0, 0.925), (0.02, 0.8, 0.925), wood)]  # back panel
    geoms += [_box((0, sy * 0.78, 0.925), (0.18, 0.02, 0.925), wood) for sy in (-1, 1)]
    shelves = [0.03, 0.45, 0.87, 1.29, 1.71]
    geoms += [_box((0, 0, z), (0.18, 0.78, 0.015), wood) for z in (*shelves, 1.835)]
    palette = [
        "0.8 0.1 0.1 1", "0.1 0.3 0.75 1", "0.95 0.8 0.1 1", "0.1 0.55 0.25 1", "0.9 0.9 0.88 1",
        "0.5 0.2 0.6 1", "0.95 0.5 0.1 1", "0.15 0.15 0.15 1", "0.3 0.7 0.8 1",
    ]  # fmt: skip
    rng = np.random.default_rng(7)  # the scene is fixed: books do not depend on the env seed
    for z in shelves[:-1]:
        yy = -0.74
        while True:
            w = float(rng.uniform(0.02, 0.05))
            if yy + 2 * w > 0.74:
                break
            h = float(rng.uniform(0.12, 0.17))
            color = palette[int(rng.integers(len(palette)))]
            geoms.append(_box((0.0, yy + w, z + 0.015 + h), (0.13, w, h), color))
            yy += 2 * w + float(rng.choice([0.002, 0.002, 0.06]))
    return _body("bookshelf", x, y, 0.0, geoms)


def _sofa(x: float, y: float) -> str:
    """Sofa against the north wall, facing -y."""
    fabric = "0.28 0.45 0.36 1"
    geoms = [
        _box((0, 0, 0.22), (1.0, 0.4, 0.2), fabric),
        _box((0, 0.32, 0.6), (1.0, 0.1, 0.22), fabric),
        _box((-0.92, 0, 0.5), (0.1, 0.4, 0.1), fabric),
        _box((0.92, 0, 0.5), (0.1, 0.4, 0.1), fabric),
        _box((-0.5, 0.15, 0.57), (0.18, 0.06, 0.16), "0.95 0.55 0.15 1", ' euler="0.3 0 0.1"'),
        _box((0.45, 0.15, 0.57), (0.18, 0.06, 0.16), "0.95 0.9 0.4 1", ' euler="0.3 0 -0.15"'),
    ]
    return _body("sofa", x, y, 0.0, geoms)


def _tv_corner(x: float, y: float) -> str:
    """Low white cabinet with a TV against the east wall, facing -x."""
    geoms = [
        _box((0, 0, 0.25), (0.22, 0.75, 0.25), "0.92 0.92 0.9 1"),
        _box((-0.225, -0.37, 0.25), (0.005, 0.35, 0.2), "0.75 0.75 0.73 1"),
        _box((-0.225, 0.37, 0.25), (0.005, 0.35, 0.2), "0.75 0.75 0.73 1"),
        _box((0.05, 0, 0.55), (0.06, 0.15, 0.05), "0.1 0.1 0.1 1"),
        _box((0.05, 0, 0.95), (0.03, 0.62, 0.36), "0.05 0.05 0.05 1"),
        _box((0.015, 0, 0.95), (0.005, 0.58, 0.32), "0.12 0.22 0.4 1", ' material="glow_low"'),
    ]
    return _body("tv", x, y, 0.0, geoms)


def _walls() -> str:
    t = 0.05
    hz = HEIGHT / 2
    walls = [
        # north (+y) teal with a window, south (-y) salmon with a door and a painting,
        # east (+x) pale yellow, west (-x) lavender with a painting
        _box((0, HALF_Y + t, hz), (HALF_X + 2 * t, t, hz), "0.45 0.68 0.66 1"),
        _box((0, -HALF_Y - t, hz), (HALF_X + 2 * t, t, hz), "0.86 0.55 0.45 1"),
        _box((HALF_X + t, 0, hz), (t, HALF_Y, hz), "0.92 0.86 0.55 1"),
        _box((-HALF_X - t, 0, hz), (t, HALF_Y, hz), "0.65 0.6 0.82 1"),
        _box((0, 0, HEIGHT + t), (HALF_X + 2 * t, HALF_Y + 2 * t, t), "0.93 0.92 0.9 1", ' material="glow_low"'),
        # baseboards
        _box((0, HALF_Y - 0.01, 0.05), (HALF_X, 0.01, 0.05), "0.95 0.95 0.95 1"),
        _box((0, -HALF_Y + 0.01, 0.05), (HALF_X, 0.01, 0.05), "0.95 0.95 0.95 1"),
        _box((HALF_X - 0.01, 0, 0.05), (0.01, HALF_Y, 0.05), "0.95 0.95 0.95 1"),
        _box((-HALF_X + 0.01, 0, 0.05), (0.01, HALF_Y, 0.05), "0.95 0.95 0.95 1"),
        # window: white frame, bright sky-blue pane
        _box((1.6, HALF_Y - 0.01, 1.55), (0.65, 0.01, 0.5), "0.97 0.97 0.97 1"),
        _box((1.6, HALF_Y - 0.02, 1.55), (0.58, 0.01, 0.43), "0.6 0.8 0.97 1", ' material="glow_mid"'),
        _box((1.6, HALF_Y - 0.03, 1.55), (0.02, 0.01, 0.43), "0.97 0.97 0.97 1"),
        # door with a knob
        _box((-1.8, -HALF_Y + 0.02, 1.0), (0.45, 0.02, 1.0), "0.5 0.3 0.15 1"),
        '<geom type="sphere" pos="-1.45 -2.44 0.95" size="0.035" rgba="0.85 0.75 0.3 1"/>',
        # painting on the south wall: dark frame, two-tone canvas with a sun
        _box((0.8, -HALF_Y + 0.015, 1.5), (0.45, 0.015, 0.32), "0.2 0.15 0.1 1"),
        _box((0.8, -HALF_Y + 0.035, 1.6), (0.4, 0.01, 0.17), "0.3 0.55 0.9 1"),
        _box((0.8, -HALF_Y + 0.035, 1.33), (0.4, 0.01, 0.1), "0.3 0.7 0.3 1"),
        f'<geom type="cylinder" pos="1.0 {-HALF_Y + 0.05} 1.62" size="0.08 0.01" euler="1.5708 0 0" '
        'rgba="1 0.85 0.2 1"/>',
        # painting on the west wall (above the plant): red and white squares
        _box((-HALF_X + 0.015, -1.6, 1.55), (0.015, 0.3, 0.3), "0.95 0.95 0.92 1"),
        _box((-HALF_X + 0.035, -1.7, 1.62), (0.01, 0.12, 0.12), "0.85 0.1 0.1 1"),
        _box((-HALF_X + 0.035, -1.45, 1.42), (0.01, 0.09, 0.09), "0.1 0.2 0.6 1"),
        # ceiling lamp
        _cyl((0.3, -0.2, HEIGHT - 0.03), 0.25, 0.03, "1 0.98 0.9 1", ' material="glow_high"'),
    ]
    return "\n    ".join(walls)


def _decor() -> str:
    items = [
        # rug under the table
        '<geom type="box" pos="0.4 -0.2 0.004" size="1.15 0.8 0.004" material="rug"/>',
        # dresser in the south-east corner
        _box((2.35, -2.15, 0.4), (0.5, 0.25, 0.4), "0.78 0.7 0.6 1"),
        _box((2.35, -1.895, 0.55), (0.45, 0.005, 0.12), "0.68 0.6 0.5 1"),
        _box((2.35, -1.895, 0.25), (0.45, 0.005, 0.12), "0.68 0.6 0.5 1"),
        _cyl((2.15, -2.2, 0.9), 0.05, 0.1, "0.3 0.3 0.3 1"),
        _cyl((2.15, -2.2, 1.08), 0.14, 0.09, "0.98 0.95 0.8 1", ' material="glow_mid"'),
        # floor lamp in the north-east corner
        _cyl((2.6, 2.1, 0.02), 0.18, 0.02, "0.15 0.15 0.15 1"),
        _cyl((2.6, 2.1, 0.75), 0.02, 0.73, "0.15 0.15 0.15 1"),
        _cyl((2.6, 2.1, 1.55), 0.22, 0.15, "1 0.95 0.75 1", ' material="glow_mid"'),
        # potted plant in the south-west corner
        _cyl((-2.6, -2.1, 0.18), 0.18, 0.18, "0.75 0.38 0.2 1"),
        '<geom type="sphere" pos="-2.6 -2.1 0.6" size="0.26" rgba="0.18 0.55 0.2 1"/>',
        '<geom type="sphere" pos="-2.45 -2.0 0.85" size="0.18" rgba="0.22 0.62 0.22 1"/>',
        '<geom type="sphere" pos="-2.72 -2.15 0.9" size="0.16" rgba="0.15 0.48 0.18 1"/>',
    ]
    return "\n    ".join(items)


def _pose_to_euler(quat_xyzw: np.ndarray) -> np.ndarray:
    """[yaw, pitch, roll] (intrinsic Z-Y-X, ROS convention) of a ROS-order quaternion."""
    return Rotation.from_quat(quat_xyzw).as_euler("ZYX")


class CameraEnv(MujocoEnv):
    """Free camera in a furnished room (modality "camera_pose").

    Action: geometry_msgs/PoseStamped pose of the camera in the room frame, 7 floats
      [x, y, z, qx, qy, qz, qw]
      - x, y, z: position in m; the room floor spans x in [-3, 3], y in [-2.5, 2.5], the ceiling is
        at z = 2.6. Positions are clipped to x in [-2.8, 2.8], y in [-2.3, 2.3], z in [0.2, 2.4].
      - qx, qy, qz, qw: orientation quaternion (ROS order, scalar last) of the camera body frame
        (REP 103: +x is the viewing direction, +y left, +z up); normalised on use, so any non-zero
        quaternion is accepted; each component lies in [-1, 1].
    The room frame has +z up; the identity quaternion looks along +x (towards the TV on the east
    wall). The camera jumps to the commanded pose for the frame (10 Hz); the field of view is 70
    degrees vertically.
    """

    domain = "camera"
    modality = "camera_pose"
    frame_rate = 10.0
    camera_name = "eye"
    _action_names = ("x", "y", "z", "qx", "qy", "qz", "qw")
    action_low = np.array([*POS_LOW, -1.0, -1.0, -1.0, -1.0])
    action_high = np.array([*POS_HIGH, 1.0, 1.0, 1.0, 1.0])

    def _build_xml(self) -> str:
        return f"""
<mujoco model="astra_camera">
  <compiler angle="radian"/>
  <option timestep="0.01" gravity="0 0 0"/>
  {VISUAL_XML}
  <default><geom contype="0" conaffinity="0"/></default>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.62 0.45 0.3" rgb2="0.55 0.39 0.25"
             width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="3 3" texuniform="true"/>
    <texture name="rug" type="2d" builtin="checker" rgb1="0.7 0.2 0.2" rgb2="0.92 0.85 0.7"
             width="64" height="64"/>
    <material name="rug" texture="rug" texrepeat="4 4" texuniform="true"/>
    <!-- self-lit surfaces (screen, window pane, lamps); the geom's rgba gives the colour -->
    <material name="glow_low" emission="0.3"/>
    <material name="glow_mid" emission="0.6"/>
    <material name="glow_high" emission="1"/>
  </asset>
  <worldbody>
    <light name="ceiling" pos="0.3 -0.2 2.45" dir="0 0 -1" cutoff="80" exponent="1" castshadow="true"
           diffuse="0.55 0.55 0.5" specular="0.05 0.05 0.05" attenuation="1 0 0"/>
    <light name="fill" pos="-1 1 2.3" dir="0.3 -0.3 -1" directional="true" castshadow="false"
           diffuse="0.25 0.25 0.25" specular="0 0 0"/>
    <geom name="floor" type="plane" size="{HALF_X} {HALF_Y} 0.1" material="floor"/>
    {_walls()}
    {_decor()}
    {_table(0.4, -0.2)}
    {_chair("chair_red", 0.4, 0.5, 0.0, "0.75 0.15 0.15 1")}
    {_chair("chair_blue", 0.4, -0.9, 3.1416, "0.2 0.35 0.75 1")}
    {_chair("chair_green", 1.4, -0.2, -1.5708, "0.2 0.6 0.3 1")}
    {_bookshelf(-2.8, 0.2)}
    {_sofa(-0.8, 2.05)}
    {_tv_corner(2.75, 0.3)}
    <body name="rig" mocap="true" pos="0 0 1.5">
      <camera name="eye" xyaxes="0 -1 0 0 0 1" fovy="70"/>
    </body>
  </worldbody>
</mujoco>
"""

    # --- pose handling ----------------------------------------------------------------------------

    def _set_pose(self, pos: np.ndarray, quat_xyzw: np.ndarray) -> None:
        self.data.mocap_pos[0] = pos
        self.data.mocap_quat[0] = (quat_xyzw[3], quat_xyzw[0], quat_xyzw[1], quat_xyzw[2])

    def current_pose(self) -> np.ndarray:
        """The camera pose as a 7-D action [x, y, z, qx, qy, qz, qw] (float64)."""
        w, x, y, z = self.data.mocap_quat[0]
        return np.array([*self.data.mocap_pos[0], x, y, z, w])

    def _init_sim(self) -> None:
        self._set_pose(np.array([-1.5, -0.8, 1.5]), Rotation.from_euler("ZYX", [0.5, 0.15, 0.0]).as_quat())
        mujoco.mj_forward(self.model, self.data)

    def _randomize(self, rng: np.random.Generator) -> None:
        pos = rng.uniform(FREE_LOW, FREE_HIGH)
        yaw, pitch = rng.uniform(-np.pi, np.pi), rng.uniform(0.0, 0.4)
        self._set_pose(pos, Rotation.from_euler("ZYX", [yaw, pitch, 0.0]).as_quat())

    def _validate_action(self, action: np.ndarray) -> np.ndarray:
        quat = action[3:]
        scale = float(np.max(np.abs(quat)))  # rescale first so huge components cannot overflow the norm
        if scale < 1e-9:
            raise ValueError(
                f"camera_pose quaternion [qx, qy, qz, qw] must be non-zero, got {quat.tolist()} "
                "(use [0, 0, 0, 1] for the identity orientation)"
            )
        quat = quat / scale
        return np.concatenate([np.clip(action[:3], POS_LOW, POS_HIGH), quat / np.linalg.norm(quat)])

    def _apply_action(self, action: np.ndarray) -> None:
        self._set_pose(action[:3], action[3:])
        self.data.time += self.frame_dt
        mujoco.mj_forward(self.model, self.data)

    # --- command generator ------------------------------------------------------------------------

    def _look_at(self, pos: np.ndarray, target: np.ndarray, yaw_ref: float) -> tuple[float, float]:
        """Yaw (unwrapped next to yaw_ref) and pitch that point the camera from pos at target."""
        d = target - pos
        yaw = math.atan2(d[1], d[0])
        pitch = math.atan2(-d[2], math.hypot(d[0], d[1]))
        return yaw_ref + float(wrap_angle(yaw - yaw_ref)), pitch

    def _walk(self, rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
        """Wandering walk: integrated Ornstein-Uhlenbeck velocity, heading turning to the direction of travel."""
        n = int(rng.integers(20, 50))
        speed_std = np.array([0.32, 0.32, 0.08])  # m/s
        vel = np.zeros(3)
        pos, yaw, pitch = s[:3].copy(), s[3], s[4]
        pitches = filtered_ou(rng, n, np.array([pitch]), np.array([rng.uniform(0.0, 0.35)]), 1.0, 0.12, self.frame_dt)
        out = np.empty((n, 6))
        for i in range(n):
            vel = ou_step(vel, np.zeros(3), 0.8, speed_std, self.frame_dt, rng)
            nxt = pos + vel * self.frame_dt
            outside = (nxt < FREE_LOW) | (nxt > FREE_HIGH)
            vel[outside] *= -1
            pos = np.clip(pos + vel * self.frame_dt, FREE_LOW, FREE_HIGH)
            if math.hypot(vel[0], vel[1]) > 0.1:
                yaw += 0.2 * float(wrap_angle(math.atan2(vel[1], vel[0]) - yaw))
            out[i] = (*pos, yaw, pitches[i, 0], 0.0)
        return out

    def _pan(self, rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
        """Stand still and turn: minimum-jerk yaw sweep with a pitch change."""
        n = int(rng.integers(15, 40))
        end = s.copy()
        end[3] += rng.choice([-1, 1]) * rng.uniform(0.6, 2.5)
        end[4] = rng.uniform(-0.1, 0.5)
        return min_jerk(s, end, n)

    def _orbit(self, rng: np.random.Generator, s: np.ndarray) -> np.ndarray | None:
        """Circle around a point of interest while looking at it; stops at the free-space boundary."""
        horiz = np.hypot(*(_POINTS_OF_INTEREST[:, :2] - s[:2]).T)
        candidates = np.flatnonzero((horiz > 0.8) & (horiz < 2.5))
        if candidates.size == 0:
            return None
        target = _POINTS_OF_INTEREST[rng.choice(candidates)]
        n = int(rng.integers(25, 60))
        omega = rng.choice([-1, 1]) * rng.uniform(0.25, 0.5)
        climb = rng.uniform(-0.15, 0.15)
        rel = s[:2] - target[:2]
        yaw = s[3]
        out = []
        for i in range(1, n + 1):
            a = omega * i * self.frame_dt
            c, sn = math.cos(a), math.sin(a)
            pos = np.array(
                [
                    target[0] + c * rel[0] - sn * rel[1],
                    target[1] + sn * rel[0] + c * rel[1],
                    s[2] + climb * i * self.frame_dt,
                ]
            )
            if np.any(pos < FREE_LOW) or np.any(pos > FREE_HIGH):
                break
            yaw, pitch = self._look_at(pos, target, yaw)
            out.append((*pos, yaw, pitch, 0.0))
        return np.array(out) if out else None

    def _dolly(self, rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
        """Move straight towards or away from a point of interest while looking at it."""
        target = _POINTS_OF_INTEREST[rng.integers(len(_POINTS_OF_INTEREST))]
        d = target - s[:3]
        d[2] = 0.0
        dist = float(np.linalg.norm(d))
        travel = float(np.clip(rng.uniform(-0.8, 1.2), -1.5, max(0.0, dist - 0.8)))
        end_pos = np.clip(s[:3] + d / max(dist, 1e-6) * travel, FREE_LOW, FREE_HIGH)
        end_pos[2] = np.clip(s[2] + rng.uniform(-0.2, 0.2), FREE_LOW[2], FREE_HIGH[2])
        n = int(rng.integers(15, 40))
        path = min_jerk(s[:3], end_pos, n)
        out, yaw = np.empty((n, 6)), s[3]
        for i, pos in enumerate(path):
            yaw, pitch = self._look_at(pos, target, yaw)
            out[i] = (*pos, yaw, pitch, 0.0)
        return out

    def sample_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n, 7] float32 camera poses: walks (integrated Ornstein-Uhlenbeck velocity), pans,
        orbits around and dollies towards points of interest (table, shelf, sofa, TV, window, ...),
        and short holds, starting from the current camera pose. Positions stay in the furniture-free
        box FREE_LOW..FREE_HIGH (x in [-2, 2.1], y in [-1.6, 1.5], z in [1.05, 1.9]) after the first
        frames (a camera placed outside it by hand is brought in at 0.8 m/s); per frame the camera
        moves at most 0.8 m/s, 1.2 rad/s in yaw, 0.6 rad/s in pitch, 0.3 rad/s in roll; pitch stays
        within [-0.5, 0.9] rad and roll (a slight handheld wobble) within +-0.1 rad. Quaternions are
        unit length with consistent sign from frame to frame. Deterministic for a given env state
        and `rng` state.
        """
        rng = self._check_sample_args(n, rng)
        pose = self.current_pose()
        start = np.concatenate([pose[:3], _pose_to_euler(pose[3:])])  # x y z yaw pitch roll
        state = start.copy()
        state[:3] = np.clip(state[:3], FREE_LOW, FREE_HIGH)
        state[4] = np.clip(state[4], *PITCH_RANGE)
        state[5] = 0.0
        chunks, total = [], 0
        while total < n:
            kind = rng.choice(["walk", "pan", "orbit", "dolly", "hold"], p=[0.3, 0.2, 0.25, 0.15, 0.1])
            seg = None
            if kind == "walk":
                seg = self._walk(rng, state)
            elif kind == "pan":
                seg = self._pan(rng, state)
            elif kind == "orbit":
                seg = self._orbit(rng, state)
            elif kind == "dolly":
                seg = self._dolly(rng, state)
            if seg is None or len(seg) == 0:
                seg = np.repeat(state[None], int(rng.integers(4, 12)), axis=0)
            chunks.append(seg)
            total += len(seg)
            state = seg[-1].copy()
        desired = np.concatenate(chunks)[:n] if chunks else np.zeros((0, 6))
        # handheld roll wobble
        roll = filtered_ou(rng, len(desired), np.zeros(1), np.zeros(1), 1.0, 0.04, self.frame_dt)
        desired[:, 5] = np.clip(roll[:, 0], -0.1, 0.1)
        # Yaw is unwrapped within the plan; the start yaw is unwrapped next to it before limiting.
        if len(desired):
            start[3] = desired[0, 3] + float(wrap_angle(start[3] - desired[0, 3]))
        smooth = rate_limit(desired, start, _STEP_LIMIT)
        smooth[:, 4] = np.clip(smooth[:, 4], *PITCH_RANGE)
        quats = Rotation.from_euler("ZYX", smooth[:, 3:6]).as_quat() if n else np.zeros((0, 4))
        prev = pose[3:]
        for q in quats:  # q and -q are the same rotation: keep the sign continuous
            if np.dot(q, prev) < 0:
                q *= -1
            prev = q
        return self._finish_actions(np.concatenate([smooth[:, :3], quats], axis=1))
