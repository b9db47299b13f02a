"""`python -m astra_ros.policy_eval`: does a policy's score in the world model predict its score in the world?

Image-based policies play the same goal-image episodes twice: in the MuJoCo world and in the world model
(`astra_model.gym_env.WorldModelEnv`). Episodes come from `astra_ros.plan_eval` (held-out seeds; the goal
is the true frame 16 frames of the world's own commands after the start). Each policy sees the frames
of the environment it acts in, and gives one command per chunk; both environments execute the same
per-frame commands from it (`chunk_commands`: a twist held, targets ramped), for `--chunks` chunks.

Both environments are scored the same way: the latent distance of the final frame to the goal image
(`astra_model.planner.latent_mse` on the model's VAE; lower is better), and success when it is within
`--tolerance`. Policies, graded in quality so that a ranking means something:

- `expert`: the commands that made the goal, then holding still;
- `noisy_expert`: those commands with noise of half the command range's standard deviation added;
- `planner`: the planner on the world model at `--candidates` candidates and `--iterations` iterations;
- `planner_small`: the same with 4 candidates and 1 iteration;
- `hold`: holding still;
- `random`: the world's own command generator.

Per world the JSON reports each policy's mean score and success rate in the model and in the world,
Pearson and Spearman correlations across policies (95% intervals from resampling episodes), and the
correlation across (policy, episode) pairs; `policy_eval_<world>.png` plots model score against world
score, one point per policy.

    python -m astra_ros.policy_eval --worlds mobile arm camera --episodes 20 --out runs/policy_eval
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import pearsonr, spearmanr
from tqdm import tqdm

from astra_model import AstraWorldModel
from astra_model.gym_env import WorldModelEnv, chunk_commands
from astra_model.planner import Planner, PlannerConfig, encode_frame, latent_mse

from . import demo_model_path
from .demo_worlds import command_space
from .envs import DOMAINS, MujocoEnv, make_env
from .plan_eval import HISTORY_FRAMES, Episode, make_episode

POLICIES = ("expert", "noisy_expert", "planner", "planner_small", "hold", "random")
BOOTSTRAP = 2000

# (frames so far, commands so far, the episode, this policy's random generator) -> the chunk's command [D]
Policy = Callable[[list[np.ndarray], list[np.ndarray], Episode, np.random.Generator], np.ndarray]


@dataclass
class World:
    """One world's settings for the policies."""

    domain: str
    modality: str
    low: np.ndarray
    high: np.ndarray
    ramp: bool
    pose: bool
    frames_per_chunk: int


def make_policies(model: AstraWorldModel, world: World, args: argparse.Namespace, env: MujocoEnv) -> dict[str, Policy]:
    f = world.frames_per_chunk
    spread = (world.high - world.low) / 4  # half the standard deviation of a uniform draw over the range, roughly

    def expert(frames, commands, episode, rng) -> np.ndarray:
        chunk = (len(frames) - len(episode.seed_frames)) // f
        goal = episode.goal_commands
        if chunk * f >= len(goal):
            return hold(frames, commands, episode, rng)
        part = goal[chunk * f : (chunk + 1) * f]
        return part[-1] if world.ramp else part.mean(axis=0)

    def noisy_expert(frames, commands, episode, rng) -> np.ndarray:
        return np.clip(
            expert(frames, commands, episode, rng) + rng.normal(0, 1, world.low.shape) * spread, world.low, world.high
        )

    def hold(frames, commands, episode, rng) -> np.ndarray:
        return np.zeros_like(commands[-1]) if not world.ramp else commands[-1]

    def random(frames, commands, episode, rng) -> np.ndarray:
        env.set_state(episode.start)  # the generator only reads where the robot is; any state of the world will do
        return env.sample_actions(f, rng)[-1]

    def planner(budget: PlannerConfig) -> Policy:
        search = Planner(model, world.modality, command_space(world.domain), budget)

        def act(frames, commands, episode, rng) -> np.ndarray:
            if len(frames) == len(episode.seed_frames):
                search.reset()
            recent = slice(-HISTORY_FRAMES, None)
            start = model.start(np.stack(frames[recent]), seed=0, commands={world.modality: np.stack(commands[recent])})
            plan = search.plan(start.snapshot(), episode.goal_frame, current=commands[-1])
            return plan.commands[f - 1]

        return act

    one_knot = {"frames_per_knot": f, "seed": args.seed}
    return {
        "expert": expert,
        "noisy_expert": noisy_expert,
        "planner": planner(
            PlannerConfig(
                candidates=args.candidates, iterations=args.iterations, elites=min(4, args.candidates), **one_knot
            )
        ),
        "planner_small": planner(PlannerConfig(candidates=4, iterations=1, elites=2, **one_knot)),
        "hold": hold,
        "random": random,
    }


def play_world(env: MujocoEnv, episode: Episode, policy: Policy, world: World, chunks: int, seed: int) -> np.ndarray:
    """The final true frame after `chunks` chunks of `policy` in MuJoCo."""
    env.set_state(episode.start)
    frames, commands = list(episode.seed_frames), list(episode.seed_commands)
    rng = np.random.default_rng(seed)
    for _ in range(chunks):
        target = policy(frames, commands, episode, rng)
        for command in chunk_commands(target, commands[-1], world.frames_per_chunk, world.ramp, world.pose):
            frames.append(env.step(command))
            commands.append(command)
    return frames[-1]


def play_model(model_env: WorldModelEnv, episode: Episode, policy: Policy, chunks: int, seed: int) -> np.ndarray:
    """The final frame after `chunks` steps of `policy` in the world model."""
    frame, _ = model_env.reset(
        seed=episode.seed, options={"frames": episode.seed_frames, "commands": episode.seed_commands}
    )
    frames, commands = list(episode.seed_frames), list(episode.seed_commands)
    rng = np.random.default_rng(seed)
    for _ in range(chunks):
        frame, _, _, _, info = model_env.step(policy(frames, commands, episode, rng).astype(np.float32))
        frames.extend(info["frames"])
        commands.extend(info["commands"])
    return frame


def correlations(model_scores: np.ndarray, world_scores: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Across policies (means over episodes) with 95% intervals from resampling episodes, and across
    (policy, episode) pairs. Scores are `[policies, episodes]`."""

    def across(m: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        return float(pearsonr(m.mean(1), w.mean(1)).statistic), float(spearmanr(m.mean(1), w.mean(1)).statistic)

    pearson, spearman = across(model_scores, world_scores)
    episodes = model_scores.shape[1]
    draws = np.array(
        [across(model_scores[:, idx], world_scores[:, idx]) for idx in rng.integers(0, episodes, (BOOTSTRAP, episodes))]
    )
    low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return {
        "pearson_across_policies": pearson,
        "pearson_ci95": [low[0], high[0]],
        "spearman_across_policies": spearman,
        "spearman_ci95": [low[1], high[1]],
        "pearson_across_episodes": float(pearsonr(model_scores.ravel(), world_scores.ravel()).statistic),
        "spearman_across_episodes": float(spearmanr(model_scores.ravel(), world_scores.ravel()).statistic),
    }


def evaluate_world(model: AstraWorldModel, domain: str, args: argparse.Namespace) -> dict[str, Any]:
    size = model.seed_frame.shape[0] if model.seed_frame is not None else 64
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    names = args.policies
    scores = {where: np.zeros((len(names), len(seeds))) for where in ("model", "world")}
    for e, seed in enumerate(tqdm(seeds, desc=f"{domain} episodes", unit="episode")):
        with make_env(domain, seed=seed, image_size=size) as env, make_env(domain, seed, size) as spare:
            episode = make_episode(env, seed)
            world = World(
                domain,
                env.modality,
                env.action_low,
                env.action_high,
                *ramps(model, env.modality),
                model.config.frames_per_chunk,
            )
            policies = make_policies(model, world, args, spare)
            goal = encode_frame(model, episode.goal_frame)
            model_env = WorldModelEnv(model, env.modality, env.action_low, env.action_high, episode.seed_frames)
            for p, name in enumerate(names):
                final = {
                    "world": play_world(env, episode, policies[name], world, args.chunks, seed),
                    "model": play_model(model_env, episode, policies[name], args.chunks, seed),
                }
                for where, frame in final.items():
                    scores[where][p, e] = latent_mse(encode_frame(model, frame), goal)[0]
    result: dict[str, Any] = {
        name: {f"{where}_score": float(scores[where][p].mean()) for where in scores}
        | {f"{where}_success": float((scores[where][p] <= args.tolerance).mean()) for where in scores}
        for p, name in enumerate(names)
    }
    result["correlation"] = correlations(scores["model"], scores["world"], np.random.default_rng(0))
    result["scores"] = {where: value.tolist() for where, value in scores.items()}
    scatter(domain, names, scores, args.out / f"policy_eval_{domain}.png")
    return result


def ramps(model: AstraWorldModel, modality: str) -> tuple[bool, bool]:
    config = model.config
    return modality in (*config.relative_poses, *config.extensions.relative_commands), modality in config.relative_poses


def scatter(domain: str, names: list[str], scores: dict[str, np.ndarray], path: Path) -> None:
    fig = Figure(figsize=(4.2, 4))
    ax = fig.add_subplot()
    for p, name in enumerate(names):
        ax.scatter(scores["world"][p].mean(), scores["model"][p].mean())
        ax.annotate(name, (scores["world"][p].mean(), scores["model"][p].mean()), fontsize=7)
    ax.set_xlabel("world: final latent distance to the goal")
    ax.set_ylabel("world model: final latent distance to the goal")
    ax.set_title(f"{domain}: one point per policy", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Policies scored in the world model and in the MuJoCo world.")
    p.add_argument("--worlds", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=98_000, help="held-out: datagen's seeds stay far below")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--candidates", type=int, default=PlannerConfig().candidates)
    p.add_argument("--iterations", type=int, default=PlannerConfig().iterations)
    p.add_argument("--tolerance", type=float, default=0.3, help="success: final latent distance at most this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = AstraWorldModel.from_pretrained(args.checkpoint or demo_model_path()).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {world: evaluate_world(model, world, args) for world in args.worlds}
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "policy_eval.json").write_text(json.dumps(result, indent=2))
    for world in args.worlds:
        r = result[world]["correlation"]
        print(
            f"{world}: Pearson {r['pearson_across_policies']:.2f} {np.round(r['pearson_ci95'], 2).tolist()}, "
            f"Spearman {r['spearman_across_policies']:.2f} {np.round(r['spearman_ci95'], 2).tolist()} across policies"
        )
        for name in args.policies:
            row = result[world][name]
            model_part = f"model {row['model_score']:.3f} ({row['model_success']:.0%})"
            print(f"  {name:13s} {model_part}  world {row['world_score']:.3f} ({row['world_success']:.0%})")
    print(f"wrote {args.out / 'policy_eval.json'}")


if __name__ == "__main__":
    main()
