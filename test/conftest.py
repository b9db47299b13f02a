"""Shared fixtures: small Astra models and a diffusers-format Wan folder built by the tests themselves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from astra_model import AstraConfig, AstraWorldModel, History
from astra_model.data import LatentClips, VideoEpisode
from astra_model.training import flow_matching_loss

# The shipped demo model's config.json as it shipped, in format 1 (it leaves every removed switch off).
FORMAT_1_DEMO_CONFIG = Path(__file__).parent / "data" / "demo_config_astra-ros-1.json"


def tiny_config(**overrides) -> AstraConfig:
    return AstraConfig.preset("tiny").replace(**overrides)


def own_worlds(*modalities: str, **settings) -> dict[str, dict]:
    """`AstraConfig.worlds` in which each of `modalities` commands a world of its own weights named after it,
    with the other `WorldConfig` fields `settings`."""
    return {m: {"modalities": [m], "own_weights": True, **settings} for m in modalities}


def randomise_action_path(model: AstraWorldModel, std: float = 0.5, seed: int = 0) -> None:
    """Give the zero-initialised experts weights, as training would, so actions change predictions."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.moae.experts:
            for expert in block:
                expert.weight.copy_(torch.randn(expert.weight.shape, generator=gen) * std)


def added_term(
    extensions: dict, weight_name: str, term: str, weight: float = 3.0
) -> tuple[AstraWorldModel, torch.Tensor]:
    """A tiny model with the `extensions` and random experts, and `flow_matching_loss`'s term `term` under
    `weight_name=weight` on one fixed batch of two twist clips with their commands kept, after checking that
    the term does not depend on its weight and is added with it."""
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(extensions=extensions))
    randomise_action_path(model)
    gen = torch.Generator().manual_seed(0)
    history = History.from_latents(torch.randn(2, 16, 3, 8, 8, generator=gen))
    target, actions = torch.randn(2, 16, 2, 8, 8, generator=gen), {"twist": torch.randn(2, 8, 6, generator=gen)}
    plain, weighted = (
        flow_matching_loss(
            model, target, history, actions, torch.Generator().manual_seed(0), action_dropout=False, **{weight_name: w}
        )
        for w in (0.0, weight)
    )
    lb = model.config.moae.load_balance_weight
    assert torch.equal(getattr(plain, term), getattr(weighted, term))
    torch.testing.assert_close(plain.total, plain.flow + lb * plain.load_balance)
    torch.testing.assert_close(weighted.total, plain.total + weight * getattr(weighted, term))
    return model, getattr(weighted, term)


def trained(head: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """`head` with every parameter drawn at random, as training would leave a zero-initialised head."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in head.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return head


@pytest.fixture(scope="session")
def wan_folder(tmp_path_factory) -> str:
    """A tiny Wan 2.1 checkpoint in the diffusers layout (`transformer/`, `vae/`)."""
    root = tmp_path_factory.mktemp("wan-tiny")
    cfg = tiny_config()
    torch.manual_seed(1)
    WanTransformer3DModel(**cfg.backbone).save_pretrained(root / "transformer")
    AutoencoderKLWan(**cfg.vae).save_pretrained(root / "vae")
    return str(root)


@pytest.fixture()
def tiny_model() -> AstraWorldModel:
    torch.manual_seed(0)
    return AstraWorldModel(tiny_config()).eval()


@pytest.fixture()
def seed_frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(1, 32, 32, 3), dtype=np.uint8)
    return np.repeat(base, 5, axis=0)


def sampled_chunk_commands(config: AstraConfig, modality: str, commands: np.ndarray) -> tuple[np.ndarray, int]:
    """A training clip's chunk commands `[8, D]` as the model reads them, from one 21-frame episode of
    random frames commanded by `commands` `[21, D]`, and the index of the chunk's first video frame."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**config.vae).eval()
    frames = np.random.default_rng(0).integers(0, 255, (21, 32, 32, 3), dtype=np.uint8)
    clips = LatentClips([VideoEpisode(frames, {modality: commands}, "ep")], vae, config, cache_dir=None)
    batch = clips.sample(1, modality, np.random.default_rng(0))
    return batch.actions[modality][0].numpy(), 1 + 4 * (batch.history.next_index - 1)


def wait_for(predicate: Callable[[], Any], what: str = "condition", timeout: float = 60.0) -> Any:
    """Poll `predicate` until it returns something truthy, and return that; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
