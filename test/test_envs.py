"""Tests for the MuJoCo data-generation worlds in astra_ros.envs (CPU rendering through OSMesa)."""

from __future__ import annotations

import copy
import itertools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from astra_ros.envs import DOMAINS, make_env
from astra_ros.envs import mobile as mobile_module

H, W = 48, 64  # non-square on purpose: (height, width) must be honoured
EXPECTED = {"mobile": ("twist", 6), "arm": ("joints", 4), "camera": ("camera_pose", 7)}
REPO = Path(__file__).resolve().parents[1]
# Mean absolute pixel change that counts as visible motion; the arm covers a smaller part of its
# image than the whole-view changes of a moving robot or camera.
VISIBLE = {"mobile": 3.0, "arm": 1.5, "camera": 3.0}
UNITS = {"mobile": ("m/s", "rad/s"), "arm": ("rad",), "camera": ("in m", "quaternion")}


@pytest.fixture(scope="module", params=DOMAINS)
def env(request):
    e = make_env(request.param, seed=0, image_size=(H, W))
    yield e
    e.close()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _two_different_actions(env) -> tuple[np.ndarray, np.ndarray]:
    """Two clearly different commands from the current state, for each domain."""
    if env.domain == "mobile":
        return np.array([0.8, 0, 0, 0, 0, 0.0]), np.array([0.0, 0, 0, 0, 0, 1.2])
    if env.domain == "arm":
        q = env.data.ctrl[:4].copy()
        up = np.clip(q + np.array([0.7, -0.4, -0.5, 0.6]), env.action_low, env.action_high)
        down = np.clip(q - np.array([0.7, -0.4, -0.5, 0.6]), env.action_low, env.action_high)
        return up, down
    pose = env.current_pose()
    moved = pose.copy()
    moved[:3] = np.clip(moved[:3] + np.array([0.4, 0.3, -0.2]), env.action_low[:3], env.action_high[:3])
    turned = pose.copy()
    turned[3:] = (Rotation.from_euler("z", 1.0) * Rotation.from_quat(pose[3:])).as_quat()
    return moved, turned


# --- interface, shapes, dtypes ----------------------------------------------------------------------


def test_interface_and_frames(env):
    modality, dim = EXPECTED[env.domain]
    assert env.modality == modality
    assert env.action_dim == dim == len(env.action_names)
    assert all(isinstance(n, str) for n in env.action_names)
    assert 5.0 <= env.frame_rate <= 30.0
    assert env.action_low.shape == env.action_high.shape == (dim,)
    doc = type(env).__doc__
    assert all(unit in doc for unit in UNITS[env.domain])
    assert all(name in doc for name in env.action_names)
    frame = env.reset()
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    action = 0.5 * (env.action_low + env.action_high)
    if env.domain == "camera":
        action = env.current_pose()
    nxt = env.step(action)
    assert nxt.shape == (H, W, 3) and nxt.dtype == np.uint8
    # a lit, textured scene: not black, not flat
    assert 30 < frame.mean() < 240
    assert frame.reshape(-1, 3).std(axis=0).mean() > 10
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50


def test_mobile_and_arm_names():
    with make_env("mobile", image_size=16) as m:
        assert m.action_names == ["linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z"]
    with make_env("arm", image_size=16) as a:
        assert a.joint_names == a.action_names
        assert a.joint_names == ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch"]
    with make_env("camera", image_size=16) as c:
        assert c.action_names == ["x", "y", "z", "qx", "qy", "qz", "qw"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_square_image_size(domain):
    with make_env(domain, seed=1, image_size=32) as e:
        assert e.reset().shape == (32, 32, 3)
        assert e.render().shape == (32, 32, 3)


@pytest.mark.parametrize("bad", [0, -5, (32,), (32, 0), "64", 1.5, None, True])
def test_bad_image_size(bad):
    with pytest.raises(ValueError, match="image_size"):
        make_env("mobile", image_size=bad)


def test_unknown_domain():
    with pytest.raises(ValueError, match=r"unknown env domain 'boat'.*mobile.*arm.*camera"):
        make_env("boat")
    with pytest.raises(ValueError, match="valid domains"):
        make_env(None)  # type: ignore[arg-type]


# --- determinism ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS)
def test_reset_determinism(domain):
    with (
        make_env(domain, seed=3, image_size=(H, W)) as a,
        make_env(domain, seed=3, image_size=(H, W)) as b,
        make_env(domain, seed=4, image_size=(H, W)) as c,
    ):
        fa, fb, fc = a.reset(), b.reset(), c.reset()
        np.testing.assert_array_equal(fa, fb)
        assert _mad(fa, fc) > 3.0
        # the RNG advances: a second reset is another start, again identical across equal seeds
        ga, gb = a.reset(), b.reset()
        np.testing.assert_array_equal(ga, gb)
        assert _mad(fa, ga) > 3.0


def test_state_roundtrip_bit_exact(env):
    env.reset()
    actions = env.sample_actions(14, np.random.default_rng(5))
    for a in actions[:4]:
        env.step(a)
    snap = env.state()
    snap_frame = env.render()
    restored = pickle.loads(pickle.dumps(snap))
    snap_copy = copy.deepcopy(snap)
    original = [env.step(a) for a in actions[4:]]
    assert _mad(original[0], original[-1]) > 0.5  # the branch actually moves
    # the snapshot is not aliased to the live simulation
    np.testing.assert_array_equal(snap["physics"], snap_copy["physics"])

    env.set_state(restored)
    np.testing.assert_array_equal(env.render(), snap_frame)
    replay = [env.step(a) for a in actions[4:]]
    for f0, f1 in zip(original, replay, strict=True):
        np.testing.assert_array_equal(f0, f1)

    # a different env instance of the same domain reproduces the branch too
    with make_env(env.domain, seed=99, image_size=(H, W)) as other:
        other.reset()
        other.set_state(snap_copy)
        np.testing.assert_array_equal(other.render(), snap_frame)
        branch = [other.step(a) for a in actions[4:]]
    for f0, f1 in zip(original, branch, strict=True):
        np.testing.assert_array_equal(f0, f1)


def test_set_state_rejects_foreign_state(env):
    other_domain = next(d for d in DOMAINS if d != env.domain)
    with make_env(other_domain, image_size=16) as other:
        foreign = other.state()
    with pytest.raises(ValueError, match="domain"):
        env.set_state(foreign)
    with pytest.raises(ValueError, match="state"):
        env.set_state({"qpos": np.zeros(3)})


def test_set_state_restores_reset_rng(env):
    env.reset()
    snap = env.state()
    first = env.reset()
    env.set_state(snap)
    np.testing.assert_array_equal(env.reset(), first)


# --- actions matter ---------------------------------------------------------------------------------


def test_actions_change_frames(env):
    env.reset()
    snap = env.state()
    a1, a2 = _two_different_actions(env)
    frames1 = [env.step(a1) for _ in range(6)]
    env.set_state(snap)
    frames2 = [env.step(a2) for _ in range(6)]
    assert _mad(frames1[-1], frames2[-1]) > VISIBLE[env.domain], env.domain
    assert _mad(frames1[-1], frames1[0]) > 1.0 or env.domain == "camera"  # the camera jumps at once


def test_mobile_ignores_unused_twist_components():
    with make_env("mobile", seed=2, image_size=(H, W)) as e:
        e.reset()
        snap = e.state()
        plain = [e.step([0.5, 0, 0, 0, 0, 0.3]) for _ in range(4)]
        e.set_state(snap)
        noisy = [e.step([0.5, 9.0, -3.0, 1.0, 2.0, 0.3]) for _ in range(4)]
    for f0, f1 in zip(plain, noisy, strict=True):
        np.testing.assert_array_equal(f0, f1)


def test_mobile_stays_in_arena_and_out_of_landmarks():
    with make_env("mobile", seed=0, image_size=16) as e:
        e.reset()
        for k in range(100):  # drive for 10 s at full speed, turning now and then
            e.step([1.0, 0, 0, 0, 0, 0.8 if (k // 25) % 2 else 0.0])
            x, y = e.data.qpos[:2]
            assert abs(x) <= mobile_module.HALF_ARENA - mobile_module.ROBOT_RADIUS + 1e-9
            assert abs(y) <= mobile_module.HALF_ARENA - mobile_module.ROBOT_RADIUS + 1e-9
            assert e._clear(np.array([x]), np.array([y]), margin=1e-6)[0], (k, x, y)


def test_arm_tracks_joint_targets():
    with make_env("arm", seed=1, image_size=16) as e:
        e.reset()
        target = np.clip(e.data.qpos[:4] + np.array([0.4, 0.2, -0.3, 0.5]), e.action_low, e.action_high)
        for _ in range(6):
            e.step(target)
        np.testing.assert_allclose(e.data.qpos[:4], target, atol=0.02)
        # out-of-range targets saturate at the joint limits instead of failing
        e.step(e.action_high + 1.0)
        np.testing.assert_array_equal(e.data.ctrl[:4], e.action_high)


def test_camera_goes_to_commanded_pose():
    with make_env("camera", seed=1, image_size=(H, W)) as e:
        e.reset()
        q = Rotation.from_euler("ZYX", [0.7, 0.2, 0.0]).as_quat()
        pose = np.array([0.5, -0.5, 1.4, *q])
        frame = e.step(pose)
        got = e.current_pose()
        np.testing.assert_allclose(got[:3], pose[:3], atol=1e-12)
        assert abs(abs(np.dot(got[3:], q)) - 1.0) < 1e-9
        # quaternions are normalised and the sign does not matter
        np.testing.assert_array_equal(e.step(np.array([*pose[:3], *(-3.0 * q)])), frame)
        # positions outside the room are clipped inside it
        e.step(np.array([10.0, -10.0, 50.0, *q]))
        np.testing.assert_allclose(e.current_pose()[:3], [2.8, -2.3, 2.4])


# --- sample_actions -------------------------------------------------------------------------------


def test_sample_actions(env):
    env.reset()
    n = 200
    acts = env.sample_actions(n, np.random.default_rng(11))
    assert acts.shape == (n, env.action_dim) and acts.dtype == np.float32
    assert np.isfinite(acts).all()
    assert (acts >= env.action_low).all() and (acts <= env.action_high).all()
    np.testing.assert_array_equal(acts, env.sample_actions(n, np.random.default_rng(11)))
    assert not np.array_equal(acts, env.sample_actions(n, np.random.default_rng(12)))

    span = env.action_high - env.action_low
    used = span > 0
    if env.domain == "camera":
        used[3:] = False  # quaternion: checked through the norm and step size below
        np.testing.assert_allclose(np.linalg.norm(acts[:, 3:], axis=1), 1.0, atol=1e-5)
        assert (np.sum(acts[1:, 3:] * acts[:-1, 3:], axis=1) > 0.98).all()  # small, sign-consistent turns
    steps = np.abs(np.diff(acts[:, used], axis=0))
    # smooth: typical frame-to-frame change is a small fraction of the range...
    assert (steps.mean(axis=0) < 0.05 * span[used]).all(), steps.mean(axis=0)
    # ...but the commands do explore: they vary over the sequence and are not white noise
    assert (acts[:, used].std(axis=0) > 0.1 * span[used] / 2).all() or env.domain == "camera"
    assert (acts[:, used].std(axis=0) > 0.02).all()
    values = acts[:, used].astype(np.float64)
    centred = values - values.mean(axis=0)
    autocorr = np.mean(centred[1:] * centred[:-1], axis=0) / np.mean(centred**2, axis=0)
    assert (autocorr > 0.9).all(), autocorr  # white noise: about 0
    diffs = np.diff(values, axis=0)
    lag1 = np.mean(diffs[1:] * diffs[:-1], axis=0) / (np.mean(diffs**2, axis=0) + 1e-12)
    assert (lag1 > 0.3).all(), lag1  # smooth changes; white noise: -0.5, a random walk: 0

    if env.domain == "mobile":
        np.testing.assert_array_equal(acts[:, 1:5], 0.0)
    if env.domain == "camera":
        from astra_ros.envs.camera import FREE_HIGH, FREE_LOW

        assert (acts[5:, :3] >= FREE_LOW - 1e-6).all() and (acts[5:, :3] <= FREE_HIGH + 1e-6).all()

    assert env.sample_actions(0, np.random.default_rng(0)).shape == (0, env.action_dim)
    with pytest.raises(ValueError, match="n must be"):
        env.sample_actions(-1, np.random.default_rng(0))


def test_sampled_rollout_moves(env):
    env.reset()
    frames = [env.render()] + [env.step(a) for a in env.sample_actions(30, np.random.default_rng(3))]
    changes = [_mad(a, b) for a, b in itertools.pairwise(frames)]
    assert max(changes) > 1.0
    assert _mad(frames[0], frames[-1]) > VISIBLE[env.domain]


# --- validation and resources -----------------------------------------------------------------------


def test_bad_actions_raise(env):
    env.reset()
    dim = env.action_dim
    good = env.current_pose() if env.domain == "camera" else 0.5 * (env.action_low + env.action_high)
    before = env.state()
    with pytest.raises(ValueError, match=rf"shape \({dim},\)"):
        env.step(np.zeros(dim + 1))
    with pytest.raises(ValueError, match=rf"shape \({dim},\)"):
        env.step(good[None])
    with pytest.raises(ValueError, match="numeric"):
        env.step(["a"] * dim)
    for value in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[-1] = value
        with pytest.raises(ValueError, match=rf"NaN or infinite values in \['{env.action_names[-1]}'\]"):
            env.step(bad)
    np.testing.assert_array_equal(env.state()["physics"], before["physics"])  # nothing was applied


def test_camera_rejects_zero_quaternion():
    with make_env("camera", image_size=16) as e, pytest.raises(ValueError, match="quaternion"):
        e.step(np.array([0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0]))


def test_close_and_context_manager():
    e = make_env("arm", image_size=16)
    with e as same:
        assert same is e
        same.reset()
    with pytest.raises(RuntimeError, match="closed"):
        e.render()
    e.close()  # idempotent


@pytest.mark.parametrize("first", ["", "import mujoco; "], ids=["fresh", "mujoco-imported-first"])
def test_import_is_light_and_selects_osmesa(first):
    hidden = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    code = (
        f"import os, sys; {first}import astra_ros.envs as m; "
        "assert os.environ['MUJOCO_GL'] == 'osmesa', os.environ['MUJOCO_GL']; "
        "bad = [x for x in ('rclpy', 'torch') if x in sys.modules]; assert not bad, bad; "
        "e = m.make_env('mobile', image_size=8); assert e.reset().shape == (8, 8, 3); e.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr  # no noise from GL teardown at exit
