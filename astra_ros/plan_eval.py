"""`python -m astra_ros.plan_eval`: can the world model's imagination steer a robot to a goal image?

Goal-image episodes in one demo world, on held-out seeds. Each episode starts from a fresh reset and
5 frames of the world's own commands; its goal is the true frame after 16 more frames of those
commands (then the world is put back). A controller then commands the world for at most `--chunks`
chunks, one chunk at a time, executed in MuJoCo:

- `model`: the planner (`astra_model.planner`) on the world model, re-grounded before each replan on
  the last 9 true frames and the commands that made them;
- `oracle`: the same planner with MuJoCo itself as its model (candidates scored on the VAE latents of
  the frames they truly end at): the upper bound the world model could reach;
- `random`: the world's own command generator, from where the robot is;
- `hold`: holding still (zero twist, the last joint targets, the last camera pose).

An episode succeeds when the final true state is within `astra_ros.demo_worlds.TOLERANCES` of the goal
state; `median_final_error` is the median of the largest error component in tolerances (1 = at the
tolerance). Per controller the JSON gives the success rate with its 95% Wilson interval, the median
final error and its components, seconds per replan, candidate frames imagined per second and the
process's peak RSS, rewritten after every episode; `plan_eval.png` shows the first episode: goal,
executed frames, and the model planner's predicted frames.

    python -m astra_ros.plan_eval --world mobile --episodes 30 --first-seed 95000 --out runs/plan_eval/mobile
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import binomtest
from tqdm import tqdm

from astra_model import AstraWorldModel
from astra_model.planner import Planner, PlannerConfig, encode_frame

from . import demo_model_path
from .demo_worlds import command_space, error_in_tolerances, goal_error, task_state
from .envs import DOMAINS, MujocoEnv, make_env

SEED_FRAMES = 5
GOAL_FRAMES = 16
HISTORY_FRAMES = 9  # the true frames the model is re-grounded on before each replan
CONTROLLERS = ("model", "oracle", "random", "hold")


@dataclass
class Episode:
    """One goal-reaching episode: where it starts and where it should end."""

    seed: int
    start: dict[str, Any]
    seed_frames: np.ndarray
    seed_commands: np.ndarray
    goal_frame: np.ndarray
    goal_state: np.ndarray
    goal_commands: np.ndarray


@dataclass
class Outcome:
    """How one controller did in one episode."""

    error: dict[str, float]
    in_tolerances: float
    frames: np.ndarray
    replan_seconds: list[float] = field(default_factory=list)
    candidate_fps: list[float] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)


def make_episode(env: MujocoEnv, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    frames = [env.reset()]
    warmup = env.sample_actions(SEED_FRAMES, rng)
    frames += [env.step(a) for a in warmup[:-1]]
    commands = np.concatenate([warmup[:1], warmup[:-1]])  # row t made frame t; row 0 repeats row 1
    start = env.state()
    goal_commands = env.sample_actions(GOAL_FRAMES, rng)
    goal_frame = env.advance(goal_commands)
    goal_state = task_state(env)
    env.set_state(start)
    return Episode(seed, start, np.stack(frames), commands.astype(np.float32), goal_frame, goal_state, goal_commands)


class MujocoRollouts:
    """`astra_model.planner.Rollouts` in the simulator itself: the oracle's model."""

    def __init__(self, sim: MujocoEnv, state: dict[str, Any], model: AstraWorldModel) -> None:
        self.sim, self.state, self.model = sim, state, model

    def last_frames(self, commands: np.ndarray, count: int) -> np.ndarray:
        return np.stack([self._last_frames(sequence, count) for sequence in commands])

    def _last_frames(self, sequence: np.ndarray, count: int) -> np.ndarray:
        self.sim.set_state(self.state)
        first = len(sequence) - count  # the first frame kept; the ones before it need no rendering
        return np.stack([self.sim.advance(sequence[: first + 1]), *(self.sim.step(c) for c in sequence[first + 1 :])])

    def last_latents(self, commands: np.ndarray, count: int) -> torch.Tensor:
        per_sequence = [[encode_frame(self.model, f) for f in frames] for frames in self.last_frames(commands, count)]
        return torch.cat([torch.cat(latents, dim=2) for latents in per_sequence])

    def frames(self, commands: np.ndarray) -> np.ndarray:
        self.sim.set_state(self.state)
        return np.stack([self.sim.step(command) for command in commands[0]])


class Controller:
    """Chooses the next chunk's commands from the true frames and commands so far."""

    def __init__(self, name: str, domain: str, model: AstraWorldModel, config: PlannerConfig, sim: MujocoEnv) -> None:
        self.name, self.domain, self.model, self.sim = name, domain, model, sim
        self.modality = sim.modality
        self.frames_per_chunk = model.config.frames_per_chunk
        self.planner = Planner(model, self.modality, command_space(domain), config)
        self.rng = np.random.default_rng(0)

    def begin(self, episode: Episode) -> None:
        self.planner.reset()
        self.rng = np.random.default_rng([episode.seed, 1])

    def act(self, env: MujocoEnv, episode: Episode, frames: list, commands: list, outcome: Outcome) -> np.ndarray:
        if self.name == "random":
            return env.sample_actions(self.frames_per_chunk, self.rng)
        if self.name == "hold":
            held = np.zeros_like(commands[-1]) if self.modality == "twist" else commands[-1]
            return np.tile(held, (self.frames_per_chunk, 1))
        started = time.perf_counter()
        plan = self.planner.plan(self._start(env, frames, commands), episode.goal_frame, current=commands[-1])
        outcome.replan_seconds.append(time.perf_counter() - started)
        outcome.candidate_fps.append(plan.candidate_frames_per_second)
        outcome.predicted.append(plan.frames)
        return plan.commands[: self.frames_per_chunk]

    def _start(self, env: MujocoEnv, frames: list, commands: list) -> Any:
        if self.name == "oracle":
            return MujocoRollouts(self.sim, env.state(), self.model)
        recent = slice(-HISTORY_FRAMES, None)
        history = {self.modality: np.stack(commands[recent])}
        return self.model.start(np.stack(frames[recent]), seed=0, commands=history).snapshot()


def play(env: MujocoEnv, episode: Episode, controller: Controller, chunks: int) -> Outcome:
    env.set_state(episode.start)
    controller.begin(episode)
    frames, commands = list(episode.seed_frames), list(episode.seed_commands)
    outcome = Outcome({}, 0.0, np.empty(0))
    for _ in range(chunks):
        for command in controller.act(env, episode, frames, commands, outcome):
            frames.append(env.step(command))
            commands.append(np.asarray(command, np.float32))
    outcome.error = goal_error(env.domain, task_state(env), episode.goal_state)
    outcome.in_tolerances = error_in_tolerances(env.domain, outcome.error)
    outcome.frames = np.stack(frames[SEED_FRAMES:])
    return outcome


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    successes = sum(o.in_tolerances <= 1.0 for o in outcomes)
    interval = binomtest(successes, len(outcomes)).proportion_ci(method="wilson")
    replans = [s for o in outcomes for s in o.replan_seconds]
    fps = [f for o in outcomes for f in o.candidate_fps]
    return {
        "success_rate": successes / len(outcomes),
        "success_ci95": [interval.low, interval.high],
        "successes": successes,
        "episodes": len(outcomes),
        "median_final_error": statistics.median(o.in_tolerances for o in outcomes),
        "median_error_components": {k: statistics.median(o.error[k] for o in outcomes) for k in outcomes[0].error},
        "seconds_per_replan": statistics.median(replans) if replans else 0.0,
        "candidate_frames_per_second": statistics.median(fps) if fps else None,
        "final_errors_in_tolerances": [o.in_tolerances for o in outcomes],
    }


def figure(episode: Episode, outcomes: dict[str, Outcome], path: Path, per_chunk: int) -> None:
    """Goal, then each controller's executed frames at chunk ends; the model's predicted frames below."""
    model = outcomes.get("model")
    rows = [(name, o.frames[per_chunk - 1 :: per_chunk]) for name, o in outcomes.items()]
    if model is not None and model.predicted:
        rows.append(("model predicted", np.stack([p[-1] for p in model.predicted])))
    columns = 1 + max(len(frames) for _, frames in rows)
    fig = Figure(figsize=(1.3 * columns, 1.4 * len(rows)))
    for r, (name, frames) in enumerate(rows):
        for c, image in enumerate([episode.goal_frame, *frames]):
            ax = fig.add_subplot(len(rows), columns, r * columns + c + 1)
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 0:
                ax.set_title("goal" if c == 0 else f"chunk {c}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def planner_config(args: argparse.Namespace) -> PlannerConfig:
    return PlannerConfig(
        method=args.method,
        horizon_chunks=args.horizon,
        candidates=args.candidates,
        iterations=args.iterations,
        elites=args.elites,
        frames_per_knot=args.frames_per_knot,
        max_batch=args.max_batch,
        cost_frames=args.cost_frames,
        cost_pool=args.cost_pool,
        seed=args.seed,
    )


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    model = AstraWorldModel.from_pretrained(args.checkpoint or demo_model_path()).eval()
    size = model.seed_frame.shape[0] if model.seed_frame is not None else 64
    config = planner_config(args)
    outcomes: dict[str, list[Outcome]] = {name: [] for name in args.controllers}
    result: dict[str, Any] = {}
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    for seed in tqdm(seeds, desc=f"{args.world} episodes", unit="episode"):
        # The world (its reset) and the oracle's copy of it are built from the episode's seed.
        with make_env(args.world, seed=seed, image_size=size) as env, make_env(args.world, seed, size) as sim:
            episode = make_episode(env, seed)
            controllers = [Controller(name, args.world, model, config, sim) for name in args.controllers]
            played = {c.name: play(env, episode, c, args.chunks) for c in controllers}
        for name, outcome in played.items():
            outcomes[name].append(outcome)
        if seed == args.first_seed:
            args.out.mkdir(parents=True, exist_ok=True)
            figure(episode, played, args.out / "plan_eval.png", model.config.frames_per_chunk)
        result = write(args, config, outcomes)  # after every episode: a stopped run keeps what it played
    return result


def write(args: argparse.Namespace, config: PlannerConfig, outcomes: dict[str, list[Outcome]]) -> dict[str, Any]:
    result = {name: summarise(found) for name, found in outcomes.items()}
    result["settings"] = {
        "world": args.world,
        "first_seed": args.first_seed,
        "chunks": args.chunks,
        "planner": vars(config),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "plan_eval.json").write_text(json.dumps(result, indent=2))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Closed-loop goal-image planning in a demo world.")
    p.add_argument("--world", choices=DOMAINS, required=True)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--first-seed", type=int, default=95_000, help="held-out: datagen's seeds stay far below")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="model folder (default: the shipped demo model)")
    p.add_argument("--controllers", nargs="+", choices=CONTROLLERS, default=list(CONTROLLERS))
    p.add_argument("--chunks", type=int, default=6, help="chunks executed per episode")
    d = PlannerConfig()  # the planner's defaults are the default budget
    p.add_argument("--method", choices=["cem", "mppi"], default=d.method)
    p.add_argument("--horizon", type=int, default=d.horizon_chunks, help="planning horizon in chunks")
    p.add_argument("--candidates", type=int, default=d.candidates)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--elites", type=int, default=d.elites)
    p.add_argument("--frames-per-knot", type=int, default=d.frames_per_knot)
    p.add_argument("--max-batch", type=int, default=d.max_batch)
    p.add_argument("--cost-frames", type=int, default=d.cost_frames, help="last frames a candidate is scored on")
    p.add_argument("--cost-pool", type=int, default=d.cost_pool, help="latent cells pooled per side before scoring")
    p.add_argument("--seed", type=int, default=d.seed, help="the planner's sampling seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def summary_line(name: str, r: dict[str, Any]) -> str:
    """One controller's row of `plan_eval.json`, as one printed line."""
    low, high = r["success_ci95"]
    return (
        f"{name:7s} success {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} [{low:.2f}, {high:.2f}], "
        f"median error {r['median_final_error']:.2f} tolerances, {r['seconds_per_replan']:.1f} s per replan"
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.episodes < 1 or args.chunks < 1:
        raise SystemExit("--episodes and --chunks must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate(args)
    for name in args.controllers:
        print(summary_line(name, result[name]))
    print(f"wrote {args.out / 'plan_eval.json'} and {args.out / 'plan_eval.png'}")


if __name__ == "__main__":
    main()
