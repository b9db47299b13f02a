"""The world-model node under real use: every world, commands at 10 Hz from another process.

The node runs as its own process (the shipped demo model unless `--checkpoint` names another), and
this process is its client: it publishes each world's commands at `--command-rate`, receives every
frame over reliable QoS and calls the node's services, as a user's nodes would. Per world, after a
`~/reset` that names no world (the first command picks it), it reports in one run:

- the sustained published rate against the configured `frame_rate`, over `--seconds` (`--old-seconds`
  for the old executor);
- chunk compute time, read from the node's debug log (one line per chunk);
- command-to-frame latency, median and 95th percentile: from a command's publication to the arrival
  of the first frame of the first chunk planned after it. The debug log says when each chunk was
  planned (in ROS time, the clock both processes share) and which frame number it starts with; this
  client counts every frame since start-up, so it knows when that frame arrived;
- the published rate during an 8-candidate, one-chunk `~/imagine` call, and the call's duration;
- the node's peak RSS.

`--architectures new old` runs the node as shipped (`python -m astra_ros.world_model_node`:
SingleThreadedExecutor, inference thread) and the same node class under the 6-thread
`MultiThreadedExecutor` that `main` used before, one after the other in the same run.
`--soak-seconds S` instead runs the shipped node in the mobile world for S seconds with an
`~/imagine` call every `--imagine-every` seconds and samples its RSS, to show whether memory stays flat.
`--sim-seconds S` instead runs it on /clock with `--slow-steps` denoising steps, at real-time factors 1
and 0, and reports the real-time factor reached and whether frame stamps advance one period per frame.

    .venv/bin/python bench/node_latency.py --seconds 300
    .venv/bin/python bench/node_latency.py --soak-seconds 900 --out bench/results/node_soak.json
    .venv/bin/python bench/node_latency.py --sim-seconds 60 --out bench/results/node_sim_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from astra_msgs.msg import ActionCandidate, ActionSequence
from astra_msgs.srv import Imagine, Reset
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState

from astra_model.checkpoint import read_config
from astra_model.config import AstraConfig
from astra_ros import demo_model_path
from astra_ros.action_conversion import COMMAND_TOPICS, action_to_msg
from astra_ros.envs import make_env

REPO = Path(__file__).resolve().parents[1]
WORLDS = {"mobile": "twist", "arm": "joints", "camera": "camera_pose"}
MSG_TYPES = {"twist": Twist, "joints": JointState, "camera_pose": PoseStamped}
CHUNK_LINE = re.compile(r"chunk (\d+) planned at (\d+) ns: frames from (\d+), computed in (\d+) ms")
TIMEOUT_S = 120.0


class Client(Node):
    """Publishes commands, receives every frame and calls services, from this process."""

    def __init__(self) -> None:
        super().__init__("node_latency_client")
        self.arrivals: list[float] = []  # wall time of each frame since the node started
        self.create_subscription(Image, "image", lambda _: self.arrivals.append(time.time()), QoSProfile(depth=1000))
        self.publishers_ = {m: self.create_publisher(t, COMMAND_TOPICS[m], 10) for m, t in MSG_TYPES.items()}
        self.sent: list[float] = []  # wall time of each command published

    def call(self, srv_type: type, name: str, request: Any, timeout: float = TIMEOUT_S) -> Any:
        client = self.create_client(srv_type, f"/world_model_node/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"service {name} did not answer")
            return future.result()
        finally:
            self.destroy_client(client)


class Commander:
    """Publishes one world's commands (the world's own command generator) at a steady rate in a thread."""

    def __init__(self, client: Client, world: str, rate: float, joint_names: list[str], seconds: float) -> None:
        self.client, self.modality, self.period = client, WORLDS[world], 1.0 / rate
        with make_env(world, seed=77_000) as env:
            self.commands = env.sample_actions(int(seconds * rate) + 100, np.random.default_rng(0))
        self.joint_names = joint_names
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        for k, command in enumerate(self.commands):
            if self._stop.wait(max(0.0, start + k * self.period - time.monotonic())):
                return
            msg = action_to_msg(self.modality, command, MSG_TYPES[self.modality], joint_names=self.joint_names)
            now = time.time_ns()
            if hasattr(msg, "header"):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            self.client.publishers_[self.modality].publish(msg)
            self.client.sent.append(now / 1e9)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class NodeProcess:
    """The node under test in its own process; its debug log gives one line per chunk."""

    def __init__(self, architecture: str, checkpoint: Path, env: dict[str, str], extra: tuple[str, ...] = ()) -> None:
        params = ["-p", f"checkpoint:={checkpoint}", "-p", "image_qos:=reliable", *extra]
        ros_args = ["--ros-args", *params, "--log-level", "world_model_node:=debug"]
        entry = ["-m", "astra_ros.world_model_node"] if architecture == "new" else [__file__, "--serve-old"]
        self.process = subprocess.Popen(
            [sys.executable, *entry, *ros_args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        self.chunks: list[tuple[int, int, float]] = []  # (planned ROS ns, first frame, compute s)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in iter(self.process.stderr.readline, ""):
            match = CHUNK_LINE.search(line)
            if match:
                self.chunks.append((int(match[2]), int(match[3]), int(match[4]) / 1e3))
            else:
                self.log.append(line)

    def rss_mb(self, field: str = "VmRSS") -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status)[1]) / 1024

    def stop(self) -> dict[str, Any]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        self._reader.join(5)
        text = "".join(self.log)
        noise = [w for w in ("Traceback", "never retrieved", "Destroyable", "context is invalid") if w in text]
        return {"exit_code": code, "exit_s": time.monotonic() - started, "shutdown_noise": noise}


def wait_for(predicate, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError("the node stopped making progress")


def rate_between(arrivals: list[float], start: float, end: float) -> float:
    window = [t for t in arrivals if start <= t <= end]
    return (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0


def latencies(sent: list[float], chunks: list[tuple[int, int, float]], arrivals: list[float]) -> list[float]:
    """Per command: seconds from its publication to the arrival of the first frame of the first chunk
    planned after it."""
    out = []
    for t in sent:
        chunk = next((c for c in chunks if c[0] / 1e9 >= t), None)
        if chunk is not None and chunk[1] < len(arrivals):
            out.append(arrivals[chunk[1]] - t)
    return out


def candidates(world: str, count: int, frames: int) -> list[ActionCandidate]:
    with make_env(world, seed=78_000) as env:
        rng = np.random.default_rng(1)
        plans = [env.sample_actions(frames, rng) for _ in range(count)]
    modality = WORLDS[world]
    return [
        ActionCandidate(
            sequences=[
                ActionSequence(modality=modality, num_frames=frames, dim=plan.shape[1], data=plan.ravel().tolist())
            ]
        )
        for plan in plans
    ]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": float(np.percentile(values, 95)), "count": len(values)}


def run_world(
    client: Client, node: NodeProcess, world: str, args, config: AstraConfig, seconds: float
) -> dict[str, Any]:
    frames_per_chunk = config.frames_per_chunk
    reset = client.call(Reset, "reset", Reset.Request(seed=-1))
    assert reset.success, reset.message
    sent_before, chunks_before = len(client.sent), len(node.chunks)
    commander = Commander(client, world, args.command_rate, config.action_labels.get("joints", []), seconds + 60)
    time.sleep(args.warmup)
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    # An imagine call while the commands keep flowing.
    request = Imagine.Request(
        candidates=candidates(world, args.imagine_candidates, frames_per_chunk),
        return_mode=Imagine.Request.RETURN_LAST_FRAME,
    )
    called = time.time()
    response = client.call(Imagine, "imagine", request)
    answered = time.time()
    time.sleep(1.0)
    commander.stop()
    time.sleep(2 * frames_per_chunk / args.frame_rate)  # the last chunks' frames arrive
    chunks = node.chunks[chunks_before:]
    in_window = [c for c in chunks if start <= c[0] / 1e9 <= end]
    sent = [t for t in client.sent[sent_before:] if start <= t <= end - 2]
    lat = latencies(sent, chunks, client.arrivals)
    compute = [c[2] for c in in_window]
    rate = rate_between(client.arrivals, start, end)
    imagine_rate = rate_between(client.arrivals, called, answered)
    result = {
        "published_rate_fps": rate,
        "published_over_configured": rate / args.frame_rate,
        "chunk_compute_s": summary(compute),
        "latency_s": summary(lat),
        "latency_bound_s": frames_per_chunk / args.frame_rate + statistics.median(compute),
        "imagine": {
            "candidates": args.imagine_candidates,
            "success": response.success,
            "message": response.message,
            "duration_s": answered - called,
            "published_rate_fps": imagine_rate,
            "published_over_configured": imagine_rate / args.frame_rate,
        },
    }
    print(
        f"  {world:7s} rate {rate:.2f} fps ({rate / args.frame_rate:.3f}), chunk {statistics.median(compute):.3f} s "
        f"(p95 {result['chunk_compute_s']['p95']:.3f}), latency median {result['latency_s']['median']:.3f} s "
        f"p95 {result['latency_s']['p95']:.3f} (bound {result['latency_bound_s']:.3f}); imagine "
        f"{answered - called:.1f} s at {imagine_rate:.2f} fps ({response.message})",
        flush=True,
    )
    return result


def start_node(
    client: Client, architecture: str, checkpoint: Path, env: dict[str, str], extra: tuple[str, ...] = ()
) -> NodeProcess:
    node = NodeProcess(architecture, checkpoint, env, extra)
    wait_for(lambda: len(client.arrivals) >= 2 or node.process.poll() is not None)
    if node.process.poll() is not None:
        raise RuntimeError("the node exited at start-up:\n" + "".join(node.log))
    return node


def run_architecture(architecture: str, args, env: dict[str, str], config: AstraConfig) -> dict[str, Any]:
    print(f"{architecture} architecture:", flush=True)
    client = Client()
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    node = start_node(client, architecture, args.checkpoint, env)
    try:
        # The old executor is the comparison, not the claim: it is measured for less time.
        seconds = args.seconds if architecture == "new" else args.old_seconds
        worlds = {world: run_world(client, node, world, args, config, seconds) for world in args.worlds}
        peak = node.rss_mb("VmHWM")
    finally:
        shutdown = node.stop()
        executor.shutdown()
        client.destroy_node()
    print(f"  peak RSS {peak:.0f} MB; SIGINT: exit {shutdown['exit_code']} in {shutdown['exit_s']:.1f} s", flush=True)
    return {"worlds": worlds, "peak_rss_mb": peak, "shutdown": shutdown}


def soak(args, env: dict[str, str], config: AstraConfig) -> dict[str, Any]:
    client = Client()
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    node = start_node(client, "new", args.checkpoint, env)
    request = Imagine.Request(
        candidates=candidates("mobile", args.imagine_candidates, config.frames_per_chunk),
        return_mode=Imagine.Request.RETURN_LAST_FRAME,
    )
    commander = Commander(client, "mobile", args.command_rate, [], args.soak_seconds + 60)
    samples, start, next_imagine = [], time.monotonic(), time.monotonic() + args.imagine_every
    try:
        while (elapsed := time.monotonic() - start) < args.soak_seconds:
            if time.monotonic() >= next_imagine:
                assert client.call(Imagine, "imagine", request).success
                next_imagine += args.imagine_every
            samples.append((elapsed, node.rss_mb()))
            time.sleep(5.0)
        peak = node.rss_mb("VmHWM")
    finally:
        commander.stop()
        shutdown = node.stop()
        executor.shutdown()
        client.destroy_node()
    times, rss = np.array(samples).T
    settled = times >= 60.0  # after the first imagine calls have sized the allocator
    slope = float(np.polyfit(times[settled] / 60, rss[settled], 1)[0])
    result = {
        "seconds": args.soak_seconds,
        "imagine_every_s": args.imagine_every,
        "imagine_calls": int(args.soak_seconds // args.imagine_every),
        "rss_mb": {"first": rss[settled][0], "last": rss[-1], "max": rss.max(), "peak_hwm": peak},
        "rss_slope_mb_per_min_after_60s": slope,
        "samples": samples,
        "shutdown": shutdown,
    }
    print(
        f"soak {args.soak_seconds:.0f} s: RSS {rss[settled][0]:.0f} -> {rss[-1]:.0f} MB (max {rss.max():.0f}), "
        f"slope {slope:+.2f} MB/min after the first minute",
        flush=True,
    )
    return result


def simulated_time(args, env: dict[str, str]) -> dict[str, Any]:
    """The node on /clock with a deliberately slow sampler: model time against wall time, and whether the
    frame stamps advance one period per frame, for a real-time factor of 1 and of 0 (as fast as it can)."""
    results = {}
    for factor in (1.0, 0.0):
        client = Client()
        stamps: list[int] = []
        client.create_subscription(
            Image,
            "image",
            lambda m, into=stamps: into.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
            1000,
        )
        executor = SingleThreadedExecutor()
        executor.add_node(client)
        threading.Thread(target=executor.spin, daemon=True).start()
        extra = (
            "-p",
            "publish_clock:=true",
            "-p",
            f"real_time_factor:={factor}",
            "-p",
            f"denoising_steps:={args.slow_steps}",
        )
        node = start_node(client, "new", args.checkpoint, env, extra)
        commander = Commander(client, "mobile", args.command_rate, [], args.sim_seconds + 60)
        time.sleep(5.0)
        first, started = len(client.arrivals), time.time()
        time.sleep(args.sim_seconds)
        last, ended = len(client.arrivals), time.time()
        commander.stop()
        node.stop()
        executor.shutdown()
        client.destroy_node()
        period = round(1e9 / args.frame_rate)
        steps = np.diff(stamps)
        model_s = (last - first) / args.frame_rate
        results[str(factor)] = {
            "denoising_steps": args.slow_steps,
            "real_time_factor_asked": factor,
            "real_time_factor_measured": model_s / (ended - started),
            "frames": last - first,
            "stamps_one_period_apart": bool((steps == period).all()),
            "stamp_gaps": int((steps != period).sum()),
        }
        print(
            f"/clock with {args.slow_steps} steps, real-time factor {factor:g}: measured "
            f"{results[str(factor)]['real_time_factor_measured']:.3f}, {last - first} frames, "
            f"stamps one period apart: {results[str(factor)]['stamps_one_period_apart']}",
            flush=True,
        )
    return results


def serve_old() -> None:
    """The node class under the executor `main` used before: MultiThreadedExecutor(6), rclpy's signals."""
    from rclpy.executors import MultiThreadedExecutor

    from astra_ros.world_model_node import WorldModelNode

    rclpy.init(args=sys.argv)
    node = WorldModelNode()
    executor = MultiThreadedExecutor(num_threads=6)
    executor.add_node(node)
    try:
        executor.spin()
    except Exception:  # SIGINT shuts the context down under the executor
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=demo_model_path())
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS), default=list(WORLDS))
    parser.add_argument("--architectures", nargs="+", choices=["new", "old"], default=["new", "old"])
    parser.add_argument("--seconds", type=float, default=300.0, help="measured seconds per world")
    parser.add_argument("--old-seconds", type=float, default=60.0, help="measured seconds per world, old executor")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after each reset before measuring")
    parser.add_argument("--command-rate", type=float, default=10.0)
    parser.add_argument("--frame-rate", type=float, default=10.0, help="the node's frame_rate (its default)")
    parser.add_argument("--imagine-candidates", type=int, default=8)
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--imagine-every", type=float, default=30.0)
    parser.add_argument("--sim-seconds", type=float, default=0.0, help="run the /clock part for this long instead")
    parser.add_argument("--slow-steps", type=int, default=20, help="denoising steps of the /clock part")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/node_latency.json")
    args = parser.parse_args()

    domain = str(101 + os.getpid() % 100)
    os.environ["ROS_DOMAIN_ID"] = domain
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rclpy.init()
    config = read_config(args.checkpoint)
    result: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "frame_rate": args.frame_rate,
        "command_rate": args.command_rate,
        "frames_per_chunk": config.frames_per_chunk,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    try:
        if args.sim_seconds:
            result["simulated_time"] = simulated_time(args, env)
        elif args.soak_seconds:
            result["soak"] = soak(args, env, config)
        else:
            result["seconds_per_world"] = {"new": args.seconds, "old": args.old_seconds}
            result["architectures"] = {a: run_architecture(a, args, env, config) for a in args.architectures}
            if {"new", "old"} <= set(args.architectures):
                result["new_over_old_rate"] = {
                    world: result["architectures"]["new"]["worlds"][world]["published_rate_fps"]
                    / max(result["architectures"]["old"]["worlds"][world]["published_rate_fps"], 1e-9)
                    for world in args.worlds
                }
                print(
                    "published rate new/old: "
                    + ", ".join(f"{w} {r:.2f}" for w, r in result["new_over_old_rate"].items())
                )
    finally:
        rclpy.try_shutdown()
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if "--serve-old" in sys.argv:
        serve_old()
    else:
        main()
