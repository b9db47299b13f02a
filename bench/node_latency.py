"""Action-to-frame latency and sustained frame rate of the world-model node, on this machine's CPU.

Runs the node in process (the shipped demo model if installed, else a tiny-preset model built on the
fly; the output says which) with a probe node on a private ROS domain, in one run:

1. Latency from an action message to the first published frame computed with it. Each trial waits
   a random fraction of a chunk (so actions land at random points of the chunk cycle), publishes a
   distinctive Twist at t0, and reads the stamp the node gave it on acceptance (the twist channel's
   newest stamp, in model time). The first chunk planned at or after that model time is the first
   that samples the command; the node's chunk records give its first frame's number, and the probe,
   which receives every frame over reliable QoS, gives that frame's arrival time t1. Latency is
   t1 - t0, compared with the window the pipeline design implies, (F+1)/fps to (2F+1)/fps for F
   frames per chunk, mean (1.5F+1)/fps.
2. The sustained published frame rate, counted at the probe over a window, against frame_rate.

    .venv/bin/python bench/node_latency.py [--frame-rate 10] [--trials 20] [--out bench/results/node_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import Twist
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from astra_model import AstraConfig, AstraWorldModel
from astra_model.worlds import guidance_scale_of
from astra_ros import demo_model_path
from astra_ros.world_model_node import WorldModelNode

TIMEOUT_S = 120.0


def wait_for(predicate, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(0.001)
    raise TimeoutError("the node stopped making progress")


class Probe(Node):
    """Publishes Twist commands and timestamps every frame it receives, in order."""

    def __init__(self, context: Context) -> None:
        super().__init__("latency_probe", context=context)
        self.arrivals: list[float] = []
        self.cmd_vel = self.create_publisher(Twist, "cmd_vel", 10)
        self.create_subscription(
            Image, "image", lambda _: self.arrivals.append(time.monotonic()), QoSProfile(depth=1000)
        )


def model_folder(tmp: Path, size: int) -> tuple[Path, str]:
    if demo_model_path().is_dir():
        return demo_model_path(), "demo model"
    torch.manual_seed(0)
    model = AstraWorldModel(AstraConfig.preset("tiny")).eval()
    model.seed_frame = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    model.save_pretrained(tmp)
    return tmp, f"tiny preset built on the fly (no demo model at {demo_model_path()})"


def measure_latency(node: WorldModelNode, probe: Probe, trials: int) -> list[float]:
    chunk_s = node.pipeline.frames_per_chunk / node.get_parameter("frame_rate").value
    channel = node.channels["twist"]
    latencies = []
    for trial in range(trials):
        time.sleep(random.uniform(0.0, chunk_s))
        before = channel.last_stamp_ns
        msg = Twist()
        msg.linear.x = 0.1 + 0.01 * trial  # distinctive per trial
        t0 = time.monotonic()
        probe.cmd_vel.publish(msg)
        accepted = wait_for(lambda b=before: channel.last_stamp_ns if channel.last_stamp_ns != b else None)
        record = wait_for(
            lambda a=accepted: next((r for r in node.pipeline.chunk_records() if r.planned_ns >= a), None)
        )
        wait_for(lambda r=record: len(probe.arrivals) > r.first_frame)
        latencies.append(probe.arrivals[record.first_frame] - t0)
    return latencies


def measure_rate(probe: Probe, seconds: float) -> float:
    start = len(probe.arrivals)
    time.sleep(seconds)
    window = probe.arrivals[start:]
    return (len(window) - 1) / (window[-1] - window[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-rate", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the node (0: torch default)")
    parser.add_argument("--size", type=int, default=64, help="frame size of the tiny model's seed frame")
    parser.add_argument("--out", default="bench/results/node_latency.json")
    args = parser.parse_args()
    random.seed(0)

    tmp = Path(tempfile.mkdtemp(prefix="astra-node-bench-"))
    folder, which = model_folder(tmp, args.size)
    overrides = {"checkpoint": str(folder), "frame_rate": args.frame_rate, "num_threads": args.threads}
    overrides |= {"image_qos": "reliable"}  # every frame must arrive for frame numbers to line up
    if args.steps is not None:
        overrides["denoising_steps"] = args.steps
    if args.guidance is not None:
        overrides["guidance_scale"] = args.guidance

    context = Context()
    rclpy.init(context=context, domain_id=101 + os.getpid() % 120)
    executor = MultiThreadedExecutor(num_threads=8, context=context)
    probe = Probe(context)  # subscribed before the node publishes its first frame
    node = WorldModelNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    for each in (probe, node):
        executor.add_node(each)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        frames_per_chunk = node.pipeline.frames_per_chunk
        wait_for(lambda: len(probe.arrivals) >= 2 * frames_per_chunk)  # past start-up
        latencies = measure_latency(node, probe, args.trials)
        rate = measure_rate(probe, args.rate_seconds)
        complete = node.pipeline.frames_out - len(probe.arrivals) <= 1  # one may be in flight
        chunk_latencies = [record.latency_s for record in node.pipeline.chunk_records()]
        settings = node._sampler_settings()
        steps, guidance = settings["steps"], settings["guidance_scale"]
        if guidance is None:  # the model's scale for the world the probe's twists command
            guidance = guidance_scale_of({"twist": None}, node.model.config)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)

    period = 1.0 / args.frame_rate
    window = ((frames_per_chunk + 1) * period, (2 * frames_per_chunk + 1) * period)
    expected_mean = (1.5 * frames_per_chunk + 1) * period
    result = {
        "model": which,
        "checkpoint": str(folder),
        "frame_size": list(node.frame_size),
        "frames_per_chunk": frames_per_chunk,
        "frame_rate": args.frame_rate,
        "denoising_steps": steps,
        "guidance_scale": guidance,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "chunk_compute_s_median": statistics.median(chunk_latencies),
        "chunk_compute_s_max": max(chunk_latencies),
        "chunk_duration_s": frames_per_chunk * period,
        "all_frames_received": complete,
        "latency_trials": len(latencies),
        "latency_s": {
            "mean": statistics.mean(latencies),
            "median": statistics.median(latencies),
            "min": min(latencies),
            "max": max(latencies),
            "all": latencies,
        },
        "latency_design_window_s": list(window),
        "latency_mean_over_design_mean": statistics.mean(latencies) / expected_mean,
        "published_rate_fps": rate,
        "published_over_configured_rate": rate / args.frame_rate,
    }
    print(f"{which}: {node.frame_size[0]}x{node.frame_size[1]} frames, {frames_per_chunk} frames/chunk,")
    print(f"  {steps} steps, guidance {guidance}, {args.threads} torch threads")
    print(
        f"chunk compute: median {result['chunk_compute_s_median']:.3f} s, max {result['chunk_compute_s_max']:.3f} s "
        f"(a chunk lasts {frames_per_chunk * period:.3f} s at {args.frame_rate} fps)"
    )
    print(
        f"action -> first frame: mean {result['latency_s']['mean']:.3f} s, median {result['latency_s']['median']:.3f}, "
        f"min {result['latency_s']['min']:.3f}, max {result['latency_s']['max']:.3f} over {len(latencies)} trials"
    )
    print(
        f"  design window {window[0]:.3f}-{window[1]:.3f} s (mean {expected_mean:.3f}); "
        f"measured/design mean = {result['latency_mean_over_design_mean']:.2f}"
    )
    print(
        f"published rate: {rate:.2f} fps of {args.frame_rate} configured "
        f"= {result['published_over_configured_rate']:.3f}"
    )
    if not complete:
        print("warning: the probe missed frames; latencies may be off by the missed count")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
