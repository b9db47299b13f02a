"""The local motion head: an exact no-op at start, then per-token shifts read from the latest history frame.
Also the other per-token head of the action path (`extensions.action_field`)."""

from __future__ import annotations

import pytest
import torch
from conftest import randomise_action_path, tiny_config, trained

from astra_model import AstraWorldModel
from astra_model.extensions import WorldExtensions
from astra_model.local_motion import LocalMotion
from astra_model.moae import Routed


@pytest.mark.parametrize(
    ("head", "prefix"),
    [
        ({"local_motion": True}, "extensions.local_motion."),
        ({"action_field": {"worlds": ["shared"]}}, "extensions.action_field."),
    ],
)
def test_a_fresh_head_changes_nothing_and_the_model_reproduces_one_without_it(head, prefix):
    torch.manual_seed(0)
    plain = AstraWorldModel(tiny_config(extensions={"spatial": True, "motion": True})).eval()
    local = AstraWorldModel(tiny_config(extensions={"spatial": True, "motion": True, **head})).eval()
    missing, unexpected = local.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(prefix) for k in missing) and missing
    randomise_action_path(plain)
    randomise_action_path(local)
    x, t, hist = torch.randn(2, 16, 2, 8, 8), torch.tensor([500.0, 200.0]), torch.randn(2, 16, 3, 8, 8)
    acts = {"twist": torch.randn(2, 8, 6)}
    with torch.no_grad():
        assert torch.equal(local(x, t, acts, hist).velocity, plain(x, t, acts, hist).velocity)


def test_offsets_shape_cumulative_and_read_from_the_token_window():
    head = trained(LocalMotion(latent_channels=4, unified_dim=3))
    latest = torch.randn(2, 4, 8, 10)  # 4 x 5 tokens
    features, kept = torch.randn(2, 3, 3), torch.ones(2, 3, 1)
    offsets = head(latest, features, kept)
    assert offsets.shape == (2, 3, 20, 2) and offsets.dtype == torch.float32
    steps = head(latest, features[:, 1:2], kept[:, 1:2])[:, 0]
    torch.testing.assert_close(offsets[:, 1] - offsets[:, 0], steps)  # frame j adds its own shift to j - 1's
    # Changing the latents of token (row 3, column 4) changes only the shifts of it and its neighbours.
    edited = latest.clone()
    edited[:, :, 6:8, 8:10] += 5.0
    changed = (head(edited, features, kept) != offsets).any(dim=-1).any(dim=1).any(dim=0).view(4, 5)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[2:4, 3:5] = True
    assert torch.equal(changed, expected)


def test_dropped_actions_do_not_move_tokens_and_a_history_is_required():
    extensions = WorldExtensions(tiny_config(moae={"unified_dim": 3}, extensions={"local_motion": True}), 1, [])
    trained(extensions.local_motion)
    features, gates = torch.randn(2, 2, 3), torch.tensor([[[1.0, 0, 0]] * 2, [[0.0, 0, 0]] * 2])
    offsets = extensions.offsets([Routed(features, gates)], 4, 4, torch.randn(2, 16, 8, 8)).view(2, 2, 16, 3)
    assert offsets[0, :, :, 1:].abs().min() > 0 and not offsets[1].any()
    assert not offsets[..., 0].any()  # tokens move within their frame only
    with pytest.raises(ValueError, match=r"extensions\.local_motion needs the latest history frame"):
        extensions.offsets([Routed(features, gates)], 4, 4, None)


def test_the_local_head_trains_with_the_action_path():
    model = AstraWorldModel(tiny_config(extensions={"local_motion": True}))
    assert all(p.requires_grad for p in model.extensions.local_motion.parameters())
