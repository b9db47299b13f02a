"""`python -m astra_ros.policy_eval` end to end on one short episode, and its correlations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config

from astra_model import AstraWorldModel
from astra_ros import policy_eval


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(sampler={"steps": 2, "shift": 3.0, "guidance_scale": 0.0})).eval()
    randomise_action_path(model)
    model.seed_frame = np.zeros((32, 32, 3), np.uint8)
    path = tmp_path_factory.mktemp("tiny-policies")
    model.save_pretrained(path)
    return path


def test_policies_are_scored_in_the_model_and_the_world(checkpoint: Path, tmp_path: Path) -> None:
    argv = ["--worlds", "mobile", "--episodes", "2", "--chunks", "1", "--candidates", "2", "--iterations", "1"]
    policy_eval.main([*argv, "--checkpoint", str(checkpoint), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "policy_eval.json").read_text())["mobile"]
    for name in policy_eval.POLICIES:
        row = result[name]
        assert row["model_score"] >= 0 and row["world_score"] >= 0
        assert 0 <= row["model_success"] <= 1 and 0 <= row["world_success"] <= 1
    scores = {where: np.array(result["scores"][where]) for where in ("model", "world")}
    assert scores["model"].shape == scores["world"].shape == (len(policy_eval.POLICIES), 2)
    for name, p in zip(policy_eval.POLICIES, range(len(policy_eval.POLICIES)), strict=True):
        assert result[name]["model_score"] == pytest.approx(scores["model"][p].mean())
    correlation = result["correlation"]
    low, high = correlation["spearman_ci95"]
    assert -1 <= low <= high <= 1 and -1 <= correlation["pearson_across_episodes"] <= 1
    assert (tmp_path / "policy_eval_mobile.png").read_bytes()[:4] == b"\x89PNG"


def test_correlations_across_policies_and_episodes() -> None:
    rng = np.random.default_rng(0)
    world = rng.uniform(0, 1, (5, 20))
    same = policy_eval.correlations(world.copy(), world, rng)
    assert same["pearson_across_policies"] == pytest.approx(1.0) and same["spearman_across_policies"] == pytest.approx(
        1.0
    )
    assert same["pearson_ci95"][0] == pytest.approx(1.0)
    flipped = policy_eval.correlations(-world, world, rng)
    assert flipped["spearman_across_policies"] == pytest.approx(-1.0)
