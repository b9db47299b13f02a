"""Planning on the world model, on this machine's CPU, in one run:

1. closed-loop goal reaching in every demo world (`astra_ros.plan_eval`, held-out seeds): the planner
   on the world model beside the same planner on MuJoCo itself (the oracle), random commands and
   holding still; success rates with 95% Wilson intervals, median final error, seconds per replan, and
   the model planner's success as a fraction of the oracle's. Each world runs in its own process, all at
   once, with `--threads` torch threads each (the cores are shared, so their seconds per replan are
   slower than a replan alone; part 2 times that);
2. one replan at the default budget in each world, alone on the machine, with torch's default threads;
3. peak memory of one replan as the candidate count grows (16 to 256, `max_batch` 8), each in a fresh
   process so that its peak RSS is its own;
4. candidate frames imagined per second, side by side: one candidate at a time through `session.step`
   (decoded, as `~/imagine` and a user's loop do), one at a time on latents, and the planner's batches of
   `max_batch` on latents.

    .venv/bin/python bench/planning.py --episodes 30
writes `bench/results/planning.json` and, per world, `bench/results/planning/<world>/plan_eval.{json,png}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astra_model import AstraWorldModel
from astra_model.branches import branch_rollouts
from astra_model.pieces import run_to_end
from astra_model.planner import Planner, PlannerConfig
from astra_ros import demo_model_path, plan_eval
from astra_ros.demo_worlds import command_space
from astra_ros.envs import DOMAINS, make_env

REPO = Path(__file__).resolve().parents[1]
MODALITY = {"mobile": "twist", "arm": "joints", "camera": "camera_pose"}


def start_state(model: AstraWorldModel, world: str, seed: int = 96_000) -> tuple[Any, np.ndarray, np.ndarray]:
    """A session state after 5 true frames of `world`, a goal frame 16 frames on, the command in force."""
    with make_env(world, seed=seed) as env:
        episode = plan_eval.make_episode(env, seed)
    commands = {MODALITY[world]: episode.seed_commands}
    state = model.start(episode.seed_frames, seed=0, commands=commands).snapshot()
    return state, episode.goal_frame, episode.seed_commands[-1]


def replan_peak_rss(world: str, candidates: int) -> dict[str, float]:
    """Peak RSS of a fresh process that loads the demo model and replans once with `candidates`."""
    code = (
        "import resource, sys, time; sys.path.insert(0, 'bench'); import planning as p; "
        f"r = p.one_replan({world!r}, {candidates}); "
        "print(r, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds, peak_kb = out.stdout.split()
    return {"candidates": candidates, "replan_s": float(seconds), "peak_rss_mb": int(peak_kb) / 1024}


def one_replan(world: str, candidates: int) -> float:
    config = PlannerConfig(candidates=candidates, iterations=1, elites=min(4, candidates))
    return replan_seconds(AstraWorldModel.from_pretrained(demo_model_path()).eval(), world, config)


def replan_seconds(model: AstraWorldModel, world: str, config: PlannerConfig) -> float:
    state, goal, current = start_state(model, world)
    started = time.perf_counter()
    Planner(model, MODALITY[world], command_space(world), config).plan(state, goal, current)
    return time.perf_counter() - started


def default_replans(worlds: list[str], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Seconds of a replan at the planner's default budget, per world: the median of `repeats`."""
    model = AstraWorldModel.from_pretrained(demo_model_path()).eval()
    replan_seconds(model, worlds[0], PlannerConfig(candidates=2, iterations=1, elites=1))  # warm-up
    times = {world: [replan_seconds(model, world, PlannerConfig()) for _ in range(repeats)] for world in worlds}
    return {world: {"median_s": float(np.median(t)), "max_s": max(t)} for world, t in times.items()}


def imagination_rates(world: str, candidates: int, max_batch: int) -> dict[str, float]:
    """Candidate frames per second of three ways to imagine `candidates` one-chunk plans from one state."""
    model = AstraWorldModel.from_pretrained(demo_model_path()).eval()
    state, _, current = start_state(model, world)
    space = command_space(world)
    rng = np.random.default_rng(0)
    params = rng.uniform(space.low, space.high, (candidates, model.config.frames_per_chunk, space.size))
    plans = {MODALITY[world]: space.commands(params, current)}
    frames = candidates * model.config.frames_per_chunk

    def rate(batch: int, decode: bool) -> float:
        run_to_end(branch_rollouts(model, state, plans, batch, None, 1, decode))  # warm-up
        started = time.perf_counter()
        run_to_end(branch_rollouts(model, state, plans, batch, None, 1, decode))
        return frames / (time.perf_counter() - started)

    rates = {
        "one_at_a_time_decoded": rate(1, decode=True),
        "one_at_a_time_latent": rate(1, decode=False),
        f"batches_of_{max_batch}_latent": rate(max_batch, decode=False),
        f"batches_of_{max_batch}_decoded": rate(max_batch, decode=True),
    }
    batched = rates[f"batches_of_{max_batch}_latent"]
    rates["planner_over_one_at_a_time_decoded"] = batched / rates["one_at_a_time_decoded"]
    rates["planner_over_one_at_a_time_latent"] = batched / rates["one_at_a_time_latent"]
    return rates


def closed_loops(worlds: list[str], episodes: int, threads: int, out: Path) -> dict[str, Any]:
    """`python -m astra_ros.plan_eval` for every world, all at once, each in its own process."""

    def flags(world: str) -> list[str]:
        return ["--out", str(out / world), "--first-seed", "95000", "--threads", str(threads)]

    processes = {
        world: subprocess.Popen(
            [sys.executable, "-m", "astra_ros.plan_eval", "--world", world, "--episodes", str(episodes), *flags(world)],
            cwd=REPO,
        )
        for world in worlds
    }
    results = {}
    for world, process in processes.items():
        if process.wait():
            raise RuntimeError(f"plan_eval --world {world} exited with {process.returncode}")
        result = json.loads((out / world / "plan_eval.json").read_text())
        oracle = result["oracle"]["success_rate"]
        result["model_over_oracle_success"] = result["model"]["success_rate"] / oracle if oracle else None
        results[world] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--worlds", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    parser.add_argument("--skip-closed-loop", action="store_true", help="only the memory and speed parts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each closed-loop process")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/planning.json")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "planner_defaults": vars(PlannerConfig()),
    }
    result["default_replan_alone"] = default_replans(args.worlds)
    for world, row in result["default_replan_alone"].items():
        print(f"{world}: a replan at the default budget takes {row['median_s']:.1f} s (max {row['max_s']:.1f})")
    result["imagination_rates"] = {
        world: imagination_rates(world, 16, PlannerConfig().max_batch) for world in args.worlds
    }
    for world, rates in result["imagination_rates"].items():
        print(f"{world}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()), flush=True)
    result["replan_memory"] = [replan_peak_rss("mobile", n) for n in (16, 64, 256)]
    for row in result["replan_memory"]:
        print(
            f"one replan, {row['candidates']} candidates: {row['replan_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    if not args.skip_closed_loop:
        folder = args.out.with_suffix("")
        result["closed_loop_threads_per_world"] = args.threads
        result["closed_loop"] = closed_loops(args.worlds, args.episodes, args.threads, folder)
        for world, table in result["closed_loop"].items():
            for name in plan_eval.CONTROLLERS:
                print(f"{world:6s} {plan_eval.summary_line(name, table[name])}")
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
