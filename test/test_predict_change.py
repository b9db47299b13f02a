"""Worlds that denoise a chunk's change since the latest history frame (`AstraConfig.predict_change`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config

from astra_model import AstraWorldModel, History
from astra_model.training import flow_matching_loss

JOINTS = {"joints": np.linspace(-0.5, 0.5, 8 * 4, dtype=np.float32).reshape(8, 4)}


def _pair() -> tuple[AstraWorldModel, AstraWorldModel]:
    """The same random weights with the joints world separate, denoising latents and denoising changes."""
    torch.manual_seed(0)
    plain = AstraWorldModel(tiny_config(separate_worlds=["joints"])).eval()
    randomise_action_path(plain)
    change = AstraWorldModel(plain.config.replace(predict_change=["joints"])).eval()
    change.load_state_dict(plain.state_dict())
    return plain, change


def test_a_rollout_adds_the_latest_history_frame_to_the_denoised_change(seed_frames):
    plain, change = _pair()
    sessions = [model.start(seed_frames, seed=5) for model in (plain, change)]
    latest = sessions[1].state.history.latents[:, :, -1:].clone()
    for session in sessions:
        session.step(JOINTS)
    n = change.config.chunk_latent_frames
    chunks = [s.state.history.latents[:, :, -n:] for s in sessions]
    # Same weights, noise and history: the same denoised tensor, read as latents by one and as a change by the other.
    torch.testing.assert_close(chunks[1], chunks[0] + latest, rtol=0, atol=1e-6)
    twist = {"twist": np.zeros((8, 6), dtype=np.float32)}
    shared = [model.start(seed_frames, seed=5).step(twist) for model in (plain, change)]
    assert np.array_equal(shared[0], shared[1])  # worlds not named denoise latents as before


def test_training_targets_the_change_from_the_clean_latest_frame():
    plain, change = _pair()
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(2, 16, 2, 8, 8, generator=gen)
    history = History.from_latents(torch.randn(2, 16, 3, 8, 8, generator=gen))
    actions = {"joints": torch.randn(2, 8, 4, generator=gen)}
    latest = history.latents[:, :, -1:]
    # Noise augmentation must not move the reference: the change is the world's, not the augmented view's.
    got = flow_matching_loss(change, target, history, actions, torch.Generator().manual_seed(9))
    want = flow_matching_loss(plain, target - latest, history, actions, torch.Generator().manual_seed(9))
    assert got.flow.item() == want.flow.item() and got.total.item() == want.total.item()
    other = flow_matching_loss(plain, target, history, actions, torch.Generator().manual_seed(9))
    assert other.flow.item() != got.flow.item()


def test_predict_change_names_separate_worlds_and_needs_a_history():
    with pytest.raises(ValueError, match=r"predict_change must name separate_worlds \(not: \['joints'\]\)"):
        tiny_config(predict_change=["joints"])
    _, change = _pair()
    with pytest.raises(ValueError, match=r"the 'joints' world denoises a change, which needs a history"):
        change.change_reference({"joints": torch.zeros(1, 8, 4)}, None)
