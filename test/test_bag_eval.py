"""``astra-eval`` end to end on bags written here with rosbags directly, plus its error messages."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import own_worlds
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from astra_model import AstraConfig, AstraWorldModel
from astra_ros import bag_eval, datagen
from astra_ros.bag_eval import EvalError, EvalOptions, main, plan_rollouts, resolve_action_topics
from astra_ros.bags import Episode

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
CAM = "/robot7/front_camera/image_raw"
CMD = "/robot7/cmd_vel_out"
ARM = "/robot7/arm/joint_states"
STATUS = "/robot7/status"
TYPES = {
    CAM: "sensor_msgs/msg/Image",
    CMD: "geometry_msgs/msg/Twist",
    ARM: "sensor_msgs/msg/JointState",
    STATUS: "std_msgs/msg/String",
}
SIZE = 32
GOOD_FRAMES = 40
BAD_FRAMES = (7, 23)  # recorded with an unsupported encoding: skipped, the rest is evaluated
T0 = 50_000_000_000
PERIOD = 100_000_000  # 10 fps
TEXTURE = cv2.GaussianBlur(
    np.random.default_rng(3).integers(0, 256, size=(SIZE, 4 * SIZE, 3), dtype=np.uint8), (0, 0), 1.5
)
MODEL_JOINTS = ["joint1", "joint2", "joint3", "joint4"]  # the tiny preset's joint labels
HISTORY, HORIZON, FPC = 5, 2, 8
RUN_ARGS = ["--history", str(HISTORY), "--horizon", str(HORIZON), "--rollouts", "2", "--steps", "2"]


# --- bags written with rosbags directly ----------------------------------------------------------


def header(t_ns: int) -> object:
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="front_camera_optical")


def image(t_ns: int, rgb: np.ndarray, encoding: str = "rgb8") -> object:
    h, w, _ = rgb.shape
    return T["sensor_msgs/msg/Image"](header(t_ns), h, w, encoding, 0, 3 * w, rgb.reshape(-1).copy())


def twist(vx: float, wz: float) -> object:
    vec = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/Twist"](linear=vec(vx, 0.0, 0.0), angular=vec(0.0, 0.0, wz))


def joints(t_ns: int, i: int) -> object:
    names = MODEL_JOINTS[::-1]  # not in model order: matched by name
    positions = np.array([0.1 * i + k for k in range(4)])
    return T["sensor_msgs/msg/JointState"](header(t_ns), names, positions, np.zeros(0), np.zeros(0))


def pan_frame(i: int, size: int = SIZE) -> np.ndarray:
    """The camera pans right 1 px per frame over a texture."""
    return np.ascontiguousarray(cv2.resize(TEXTURE[:, i : i + SIZE], (size, size), interpolation=cv2.INTER_AREA))


def write_bag(
    path: Path,
    storage: str = "mcap",
    *,
    good_frames: int = GOOD_FRAMES,
    bad_frames: tuple[int, ...] = (),
    size: int = SIZE,
) -> Path:
    """A robot recording: camera, header-less twist commands, joint states and a status topic.

    Messages are logged 2 ms after their header stamps (as a recorder would); images at 10 fps,
    bad frames inserted at the given indices.
    """
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=TS) for topic, msgtype in TYPES.items()}

        def put(topic: str, t_ns: int, msg: object) -> None:
            writer.write(conns[topic], t_ns + 2_000_000, TS.serialize_cdr(msg, TYPES[topic]))

        good = 0
        for i in range(good_frames + len(bad_frames)):
            t = T0 + i * PERIOD
            put(CMD, t - 20_000_000, twist(0.5, 0.1 * (i % 3)))
            put(ARM, t - 10_000_000, joints(t, i))
            if i in bad_frames:
                put(CAM, t, image(t, pan_frame(good, size), encoding="yuv999"))
            else:
                put(CAM, t, image(t, pan_frame(good, size)))
                good += 1
            if i % 10 == 0:
                put(STATUS, t, T["std_msgs/msg/String"](data=f"ok {i}"))
    return path


def bag_messages(path: Path) -> list[tuple[str, int, bytes]]:
    with AnyReader([path], default_typestore=TS) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    AstraWorldModel(AstraConfig.preset("tiny")).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mcap_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict:
    """One full evaluation of a partly bad MCAP bag, shared by the output checks below."""
    root = tmp_path_factory.mktemp("eval-mcap")
    bag = write_bag(root / "recording", "mcap", bad_frames=BAD_FRAMES)
    out = root / "out"
    argv = [str(bag), "--out", str(out), "--checkpoint", str(model_dir), "--image-topic", CAM]
    argv += ["--action-topic", f"twist={CMD}", *RUN_ARGS]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(argv)
    report = json.loads((out / "report.json").read_text())
    return {"bag": bag, "out": out, "status": status, "report": report, "stdout": printed.getvalue()}


# --- full runs -----------------------------------------------------------------------------------


def test_eval_writes_every_output(mcap_run: dict) -> None:
    out = mcap_run["out"]
    assert mcap_run["status"] == 0
    expected = ["report.json", "report.md", "video_worst.mp4", "video_median.mp4", "video_best.mp4"]
    expected += [f"plot_{m}.png" for m in ("psnr", "ssim", "motion_epe", "motion_cos", "motion_err")]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "replay_bag" / "metadata.yaml").is_file()


def test_report_has_per_horizon_tables_for_model_and_baseline(mcap_run: dict) -> None:
    report = mcap_run["report"]
    assert report["settings"]["horizon_chunks"] == HORIZON and report["settings"]["frames_per_chunk"] == FPC
    for who in ("model", "baseline"):
        for metric in ("psnr", "ssim", "motion_epe", "motion_cos", "motion_err"):
            stats = report["per_chunk"][who][metric]
            assert len(stats["mean"]) == len(stats["std"]) == HORIZON
            assert np.isfinite(stats["mean"]).all()
        for metric in ("psnr", "ssim", "motion_epe"):
            assert len(report["per_frame"][who][metric]["mean"]) == HORIZON * FPC
        assert set(report["summary"][who]) == {"psnr", "ssim", "motion_epe", "motion_cos", "motion_err"}
    assert "lpips" not in report["summary"]["model"]
    assert report["lpips"].startswith("unavailable (weights not present")
    # The copy of the last seed frame never moves while the recorded camera pans.
    assert report["per_chunk"]["baseline"]["motion_cos"]["mean"] == [0.0] * HORIZON
    assert [r["start_frame"] for r in report["rollouts"]] == [HISTORY, GOOD_FRAMES - HORIZON * FPC]


def test_skipped_messages_are_counted_in_the_report(mcap_run: dict) -> None:
    report = mcap_run["report"]
    assert report["episode"]["frames"] == GOOD_FRAMES
    assert report["episode"]["skipped"] == {f"{CAM}:undecodable": len(BAD_FRAMES)}
    assert any("skipped 2 message(s)" in w for w in report["warnings"])
    assert f"`{CAM}:undecodable`: 2" in (mcap_run["out"] / "report.md").read_text()


def test_summary_is_printed(mcap_run: dict) -> None:
    summary = mcap_run["stdout"]
    for text in ("world model", "copy last", "PSNR [dB]", f"{CAM}:undecodable: 2", "lpips: unavailable", "report.md"):
        assert text in summary


def test_report_md_explains_the_numbers(mcap_run: dict) -> None:
    text = (mcap_run["out"] / "report.md").read_text()
    for heading in ("## Summary", "## Per chunk ahead", "## Per frame ahead", "## Rollouts", "## What the numbers"):
        assert heading in text
    assert "![plot_psnr.png](plot_psnr.png)" in text
    assert "| PSNR [dB] ↑ |" in text


def test_plots_are_valid_pngs(mcap_run: dict) -> None:
    for name in mcap_run["report"]["plots"]:
        path = mcap_run["out"] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = iio.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0  # something was drawn


def test_videos_are_readable_side_by_side_and_upscaled(mcap_run: dict) -> None:
    videos = mcap_run["report"]["videos"]
    assert set(videos) == {"worst", "median", "best"}
    scores = [videos[label]["psnr"] for label in ("worst", "median", "best")]
    assert scores == sorted(scores)
    frames = iio.imread(mcap_run["out"] / "video_median.mp4")
    assert frames.shape[0] == HORIZON * FPC
    height, width = frames.shape[1:3]
    assert height >= 256 and width > 3 * 256 and height % 2 == 0 and width % 2 == 0


def test_output_bag_holds_original_topics_and_predictions(mcap_run: dict) -> None:
    source = bag_messages(mcap_run["bag"])
    copied = bag_messages(mcap_run["out"] / "replay_bag")
    predicted_topic = "/astra/predicted/image"
    assert [m for m in copied if m[0] != predicted_topic] == source  # raw bytes, log times and order kept

    report = mcap_run["report"]
    good_stamps = [T0 + i * PERIOD for i in range(GOOD_FRAMES + len(BAD_FRAMES)) if i not in BAD_FRAMES]
    expected = sorted(good_stamps[r["start_frame"] + k] for r in report["rollouts"] for k in range(HORIZON * FPC))
    with AnyReader([mcap_run["out"] / "replay_bag"], default_typestore=TS) as reader:
        assert {t: i.msgtype for t, i in reader.topics.items()} == {**TYPES, predicted_topic: "sensor_msgs/msg/Image"}
        conns = [c for c in reader.connections if c.topic == predicted_topic]
        msgs = [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in msgs]
    assert stamps == expected
    assert [t for t, _ in msgs] == [s + 2_000_000 for s in stamps]  # the recorded frames' log times
    first = msgs[0][1]
    assert (first.encoding, first.height, first.width, first.header.frame_id) == (
        "rgb8",
        32,
        32,
        "front_camera_optical",
    )


def test_eval_on_sqlite3_bag_with_joint_and_twist_actions(tmp_path: Path, model_dir: Path) -> None:
    bag = write_bag(tmp_path / "recording", "sqlite3", good_frames=HISTORY + FPC)
    out = tmp_path / "out"
    argv = [str(bag), "--out", str(out), "--checkpoint", str(model_dir), "--image-topic", CAM]
    argv += ["--action-topic", f"twist={CMD}", "--action-topic", f"joints={ARM}"]
    argv += ["--history", str(HISTORY), "--horizon", "1", "--rollouts", "3", "--steps", "2", "--guidance", "0"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["action_topics"] == {"twist": CMD, "joints": ARM}
    assert report["joint_names"] == MODEL_JOINTS
    assert len(report["rollouts"]) == 1 and report["settings"]["guidance"] == 0
    assert any("1 rollout(s) instead of 3" in w for w in report["warnings"])
    with AnyReader([out / "replay_bag"], default_typestore=TS) as reader:
        counts = {t: i.msgcount for t, i in reader.topics.items()}
    assert counts == {
        CAM: HISTORY + FPC,
        CMD: HISTORY + FPC,
        ARM: HISTORY + FPC,
        STATUS: 2,
        "/astra/predicted/image": FPC,
    }


# --- start points --------------------------------------------------------------------------------


def episode_of(frames: int) -> Episode:
    return Episode(np.zeros((frames, 32, 32, 3), np.uint8), np.arange(frames) * PERIOD, {}, {}, "test")


@pytest.mark.parametrize(
    ("frames", "rollouts", "spacing", "starts"),
    [
        (100, 4, None, [5, 31, 57, 84]),  # spread evenly, first and last possible start included
        (40, 8, None, [5, 24]),  # only two non-overlapping windows fit
        (21, 8, None, [5]),
        (40, 3, 4, [5, 9, 13]),
        (40, 8, 10, [5, 15]),  # overlapping when asked for
    ],
)
def test_rollout_start_frames(frames: int, rollouts: int, spacing: int | None, starts: list[int]) -> None:
    options = EvalOptions(Path("bag"), Path("out"), history=HISTORY, horizon=2, rollouts=rollouts, spacing=spacing)
    plan = plan_rollouts(episode_of(frames), AstraConfig.preset("tiny"), options)
    assert plan.starts == starts


def test_history_is_reduced_to_the_models_1_plus_4k_frames() -> None:
    options = EvalOptions(Path("bag"), Path("out"), history=8)
    assert plan_rollouts(episode_of(40), AstraConfig.preset("tiny"), options).history_used == 5


# --- errors --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bag(tmp_path_factory.mktemp("small") / "recording", "mcap", good_frames=GOOD_FRAMES)


def run_failing(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def base_args(bag: Path, out: Path, model_dir: Path) -> list[str]:
    return [str(bag), "--out", str(out), "--checkpoint", str(model_dir), "--action-topic", f"twist={CMD}"]


def test_error_nonexistent_bag(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_failing(capsys, [*base_args(tmp_path / "nope", tmp_path / "out", model_dir), "--image-topic", CAM])
    assert "astra-eval: error:" in err and "does not exist" in err


def test_error_missing_topic(small_bag: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_failing(capsys, [*base_args(small_bag, tmp_path / "out", model_dir), "--image-topic", "/camera/nope"])
    assert "'/camera/nope' not found" in err and CAM in err


def test_error_mistyped_topic(small_bag: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_failing(capsys, [*base_args(small_bag, tmp_path / "out", model_dir), "--image-topic", STATUS])
    assert "std_msgs/msg/String" in err and "sensor_msgs/msg/Image" in err


def test_error_too_few_frames(small_bag: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [*base_args(small_bag, tmp_path / "out", model_dir), "--image-topic", CAM, "--history", "30"]
    err = run_failing(capsys, argv)
    assert "too few frames" in err and f"{GOOD_FRAMES} usable, need 46" in err


def test_error_broken_timestamps(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    bag = tmp_path / "backwards"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection(CAM, TYPES[CAM], typestore=TS)
        cmd = writer.add_connection(CMD, TYPES[CMD], typestore=TS)
        for i in range(30):
            stamp = T0 - i * PERIOD  # header stamps run backwards
            writer.write(cam, T0 + i * PERIOD, TS.serialize_cdr(image(stamp, pan_frame(i)), TYPES[CAM]))
            writer.write(cmd, T0 + i * PERIOD, TS.serialize_cdr(twist(0.1, 0.0), TYPES[CMD]))
    err = run_failing(capsys, [*base_args(bag, tmp_path / "out", model_dir), "--image-topic", CAM])
    assert "only 1 of 30 frames are usable" in err and "out of order" in err


def test_error_frame_size_the_model_cannot_take(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / "odd", "mcap", size=24)
    err = run_failing(capsys, [*base_args(bag, tmp_path / "out", model_dir), "--image-topic", CAM])
    assert "24x24" in err and "multiples of 16" in err


def test_error_no_demo_model(
    small_bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(bag_eval, "demo_model_path", lambda: tmp_path / "no-demo")
    err = run_failing(capsys, [str(small_bag), "--out", str(tmp_path / "out"), "--image-topic", CAM])
    assert "pass --checkpoint" in err


def test_error_bad_action_topics(
    small_bag: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [str(small_bag), "--out", str(tmp_path / "out"), "--checkpoint", str(model_dir), "--image-topic", CAM]
    assert "MODALITY=TOPIC" in run_failing(capsys, [*argv, "--action-topic", CMD])
    assert "twist" in run_failing(capsys, [*argv, "--action-topic", f"wheels={CMD}"])
    err = run_failing(capsys, argv)  # no --action-topic and no default topic in the bag
    assert "none of the default action topics" in err and CMD in err


@pytest.mark.parametrize("option", ["--rollouts", "--horizon", "--history", "--spacing", "--steps"])
def test_error_counts_below_one(option: str, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_failing(capsys, [*base_args(tmp_path / "bag", tmp_path / "out", model_dir), option, "0"])
    assert f"{option} must be >= 1, got 0" in err


def test_default_action_topics_are_found_in_the_bag(tmp_path: Path) -> None:
    bag = tmp_path / "defaults"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=TS)
        writer.add_connection("/joint_command", "std_msgs/msg/String", typestore=TS)  # wrong type: ignored
    options = EvalOptions(bag, tmp_path / "out")
    assert resolve_action_topics(options, AstraConfig.preset("tiny")) == {"twist": "/cmd_vel"}
    config = AstraConfig.preset("tiny").replace(modalities={"twist": 6}, action_labels={})
    with pytest.raises(EvalError, match="takes no 'joints' actions"):
        resolve_action_topics(EvalOptions(bag, tmp_path, action_topics={"joints": "/j"}), config)


def test_action_topics_of_two_worlds_are_refused_for_a_model_with_separate_worlds(tmp_path: Path) -> None:
    bag = tmp_path / "two_worlds"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=TS)
        writer.add_connection("/joint_command", "sensor_msgs/msg/JointState", typestore=TS)
    shared = AstraConfig.preset("tiny")
    assert set(resolve_action_topics(EvalOptions(bag, tmp_path / "out"), shared)) == {"twist", "joints"}
    separate = shared.replace(worlds=own_worlds("joints"))
    with pytest.raises(EvalError, match=r"must come from one world.*pick one world's topics"):
        resolve_action_topics(EvalOptions(bag, tmp_path / "out"), separate)
    one = EvalOptions(bag, tmp_path / "out", action_topics={"joints": "/joint_command"})
    assert resolve_action_topics(one, separate) == {"joints": "/joint_command"}


@pytest.mark.parametrize(
    ("domain", "found"), [("arm", {"joints": "/joint_command"}), ("camera", {"camera_pose": "/camera_pose_cmd"})]
)
def test_default_action_topics_find_what_datagen_records(tmp_path: Path, domain: str, found: dict[str, str]) -> None:
    datagen.main(["--domains", domain, "--episodes", "1", "--frames", "2", "--out", str(tmp_path)])
    options = EvalOptions(tmp_path / domain / "seed_00000", tmp_path / "out")
    assert resolve_action_topics(options, AstraConfig.preset("tiny")) == found


def test_existing_output_bag_is_not_overwritten(
    small_bag: Path, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "out" / "replay_bag").mkdir(parents=True)
    err = run_failing(capsys, [*base_args(small_bag, tmp_path / "out", model_dir), "--image-topic", CAM])
    assert "exists already" in err
