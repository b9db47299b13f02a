"""Exact behaviour of the model's parts: config, action grouping, MoAE routing, history slots, sampler, loss."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from astra_model import AstraConfig, AstraWorldModel, History, HistoryConfig
from astra_model.actions import group_per_latent_frame
from astra_model.extensions import WorldExtensions
from astra_model.history import slot_layout
from astra_model.moae import MixtureOfActionExperts, Routed
from astra_model.pieces import run_to_end
from astra_model.rope import grid_positions, moved, rotary_embedding
from astra_model.sampler import denoising
from astra_model.spatial import at_tokens, spatial_basis
from astra_model.training import flow_matching_loss, noise_augment_history, pair_error, shift_sigma


def test_config_json_round_trip_and_validation():
    cfg = AstraConfig.preset("wan2.1-t2v-1.3b")
    assert AstraConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.frames_per_chunk == 32 and cfg.history.capacity == 20
    with pytest.raises(ValueError, match="attention must be 'full' or 'block_causal'"):
        tiny_config(attention="causal")
    with pytest.raises(ValueError, match="top_k must be in"):
        tiny_config(moae={"top_k": 5})
    with pytest.raises(ValueError, match="unknown preset"):
        AstraConfig.preset("wan-14b")


def test_actions_grouped_per_latent_frame():
    video = torch.arange(2 * 8 * 2, dtype=torch.float32).reshape(2, 8, 2)
    stacked = group_per_latent_frame(video, tiny_config())
    assert stacked.shape == (2, 2, 8)
    assert stacked[0, 1].tolist() == [8, 9, 10, 11, 12, 13, 14, 15]
    mean = group_per_latent_frame(video, tiny_config(action_grouping="mean"))
    assert mean[0, 0].tolist() == [3.0, 4.0]


def test_learned_routing_picks_top_k_and_balances():
    cfg = tiny_config(moae={"top_k": 2, "num_experts": 3})
    moae = MixtureOfActionExperts(cfg, num_blocks=1)
    encoded = moae.encode({"twist": torch.randn(4, 5, 24)}, history_flag=0.0)
    routed, _ = moae.route(encoded)
    gates = routed[0].gates
    assert torch.allclose(gates.sum(-1), torch.ones(4, 5))
    assert ((gates > 0).sum(-1) == 2).all()
    # Perfectly uniform routing gives the Switch loss its minimum, 1.
    probs = torch.full((10, 3), 1 / 3)
    top = torch.tensor([[0], [1], [2]] * 3 + [[0]])
    assert abs(moae._load_balance_loss(probs[:9], top[:9]).item() - 1.0) < 1e-6


def test_modality_routing_sends_each_modality_to_its_expert():
    cfg = tiny_config(moae={"routing": "modality", "num_experts": 3})
    moae = MixtureOfActionExperts(cfg, num_blocks=1)
    routed, loss = moae.route(moae.encode({"joints": torch.randn(1, 2, 16), "twist": torch.randn(1, 2, 24)}, 0.0))
    assert loss.item() == 0.0
    assert [int(r.gates[0, 0].argmax()) for r in routed] == [cfg.expert_of("joints"), cfg.expert_of("twist")]
    assert cfg.expert_of("twist") == 0 and cfg.expert_of("joints") == 1


def test_spatial_action_embedding_varies_across_the_image_as_e1_plus_x_ex_plus_y_ey():
    positions = torch.tensor([[0, 0, 0], [0, 0, 2], [0, 2, 0], [0, 1, 1]])  # (frame, row, col), 3x3 grid
    basis = spatial_basis(positions, 3, 3)
    assert basis.tolist() == [[1, -1, -1], [1, 1, -1], [1, -1, 1], [1, 0, 0]]
    e1, ex, ey = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([10.0, 0.0])
    coeffs = torch.cat([e1, ex, ey]).view(1, 1, 6)  # one latent frame's coefficients, broadcast to 4 tokens
    assert at_tokens(coeffs, basis).tolist() == [[[-9, -2], [-9, 2], [11, -2], [1, 0]]]
    assert at_tokens(coeffs, None) is coeffs  # not spatial: the broadcast embedding as it is


def test_moved_rotary_tables_are_those_of_the_moved_positions():
    positions = grid_positions(torch.arange(3, 5), 4, 4)
    base = rotary_embedding(positions, 32)
    offsets = torch.zeros(2, len(positions), 3)
    offsets[1, :, 1:] = torch.tensor([2.0, -3.0])
    cos, sin = moved(base, offsets, 32)
    assert cos.shape == (2, 32, 1, 32)
    assert torch.equal(cos[0], base[0][0]) and torch.equal(sin[0], base[1][0])  # no offset: exactly the tables
    shifted = rotary_embedding(positions + torch.tensor([0, 2, -3]), 32)
    torch.testing.assert_close(cos[1:], shifted[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[1:], shifted[1], atol=1e-6, rtol=0)


def test_motion_offsets_shift_and_zoom_each_frame_by_the_motion_so_far():
    config = tiny_config(moae={"unified_dim": 2, "routing": "modality"}, extensions={"motion": True})
    extensions = WorldExtensions(config, 1, [])
    with torch.no_grad():
        extensions.motion.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        extensions.motion.head.bias.copy_(torch.tensor([0.0, 0.0, math.log(2)]))
    features = torch.tensor([[[1.0, -2.0], [0.5, 0.0]]])  # frame 0 moves (1, -2), frame 1 by (0.5, 0) more
    gates = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    offsets = extensions.offsets([Routed(features, gates)], 2, 2, None).view(2, 2, 2, 3)
    # Frame 0: zoom 2 about the centre (rows/cols at -0.5, 0.5 move by -0.5, +0.5), then the shift.
    assert offsets[0, 0, 0].tolist() == [0.0, 1 - 0.5, -2 - 0.5] and offsets[0, 1, 1].tolist() == [0.0, 1.5, -1.5]
    # Frame 1: zoom 4 (moves -1.5 / +1.5) after a total shift of (1.5, -2).
    assert offsets[1, 0, 1].tolist() == [0.0, 1.5 - 1.5, -2 + 1.5]
    dropped = extensions.offsets([Routed(features, torch.zeros_like(gates))], 2, 2, None)
    assert not dropped.any()  # a sample whose actions were dropped does not move


def test_moae_standardises_each_command_element_with_the_configs_statistics():
    stats = {"twist": {"mean": [1.0, 0, 0, 0, 0, -2.0], "std": [0.5, 1, 1, 1, 1, 4.0]}}
    plain = MixtureOfActionExperts(tiny_config(), 1)
    scaled = MixtureOfActionExperts(tiny_config(action_stats=stats), 1)
    scaled.load_state_dict(plain.state_dict())
    grouped = torch.randn(2, 3, 24)  # 4 video frames of 6 stacked per latent frame
    mean, std = torch.tensor(stats["twist"]["mean"]).repeat(4), torch.tensor(stats["twist"]["std"]).repeat(4)
    torch.testing.assert_close(
        scaled.encode({"twist": grouped}, 0.0)["twist"], plain.encode({"twist": (grouped - mean) / std}, 0.0)["twist"]
    )
    with pytest.raises(ValueError, match=r"action_stats\['twist'\] needs 'mean' and positive 'std', 6 each"):
        tiny_config(action_stats={"twist": {"mean": [0.0] * 6, "std": [0.0] * 6}})


def test_history_slots_and_positions():
    layout = HistoryConfig(first_frame=True, slots_4x=16, slots_2x=2, slots_1x=1)
    s = slot_layout(25, layout)
    assert s.x1 == [0, 24] and s.x2 == [22, 23] and s.x4 == list(range(6, 22))
    short = slot_layout(3, layout)
    assert short.x1 == [0, 2] and short.x2 == [1] and short.x4 == []
    hist = History(torch.randn(1, 16, 25, 8, 8), torch.arange(25)).trimmed(layout)
    assert hist.length == 20 and hist.indices.tolist() == [0, *range(6, 25)]
    model = AstraWorldModel(tiny_config(history=layout))
    tokens, pos = model.history_embedder(hist, layout)
    # 4x: 16 frames -> 4 x 1 x 1 tokens; 2x: 1 x 2 x 2; 1x: 2 x 4 x 4
    assert tokens.shape == (1, 4 + 4 + 32, 64)
    assert pos[:4, 0].tolist() == [6, 10, 14, 18]
    assert pos[4:8].tolist() == [[22, 0, 0], [22, 0, 2], [22, 2, 0], [22, 2, 2]]
    assert pos[8, 0] == 0 and pos[-1].tolist() == [24, 3, 3]


def test_history_commands_stay_with_their_frames():
    layout = HistoryConfig(first_frame=True, slots_4x=4, slots_2x=2, slots_1x=1)
    hist = History(torch.zeros(1, 16, 2, 8, 8), torch.arange(2), {"twist": torch.tensor([[[1.0], [2.0]]])})
    # A chunk without commands is unknown (zeros); a modality new to the history is zero before.
    hist = hist.append(torch.zeros(1, 16, 2, 8, 8), layout)
    hist = hist.append(torch.zeros(1, 16, 6, 8, 8), layout, {"joints": torch.arange(5.0, 11.0).view(1, 6, 1)})
    assert hist.indices.tolist() == [0, *range(3, 10)]  # trimmed to 1 + 4 + 2 + 1 frames
    assert hist.actions["twist"].flatten().tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert hist.actions["joints"].flatten().tolist() == [0, 0, 5, 6, 7, 8, 9, 10]
    assert hist.repeat(2).actions["joints"].shape == (2, 8, 1)
    with pytest.raises(ValueError, match=r"history actions\['twist'\] must be \[1, 2, A\]"):
        History(torch.zeros(1, 16, 2, 8, 8), torch.arange(2), {"twist": torch.zeros(1, 3, 1)})


def test_history_command_groups_follow_the_embedders_tokens():
    layout = HistoryConfig(first_frame=True, slots_4x=4, slots_2x=2, slots_1x=1)
    model = AstraWorldModel(tiny_config(history=layout))
    for length in (1, 2, 4, 8, 6):
        values = torch.arange(float(length)).view(1, length, 1)
        hist = History(torch.randn(1, 16, length, 8, 8), torch.arange(length), {"joints": values})
        pooled, scales = hist.group_actions(layout)
        tokens, _ = model.history_embedder(hist, layout)
        per_scale = {4: 1, 2: 4, 1: 16}  # 8x8 latents: 2s x 2s patches
        assert sum(per_scale[s] for s in scales) == tokens.shape[1]
        assert pooled["joints"].shape == (1, len(scales), 1)
    # 6 frames: the 4x group holds frames 1-2 (padded in front), 2x frames 3-4, 1x the first and the latest.
    assert scales == [4, 2, 1, 1] and pooled["joints"].flatten().tolist() == [1.5, 3.5, 0.0, 5.0]


def test_rope_matches_wan_on_a_dense_grid():
    model = AstraWorldModel(tiny_config())
    probe = torch.zeros(1, 16, 3, 8, 10)
    cos_ref, sin_ref = model.backbone.rope(probe)
    cos, sin = rotary_embedding(grid_positions(torch.arange(3), 4, 5), head_dim=32)
    assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)


def test_euler_sampler_recovers_the_exact_target():
    x0 = torch.randn(1, 4, 2, 4, 4)

    def oracle(x, t, mask):  # exact flow-matching velocity towards x0
        sigma = (t / 1000).view(-1, 1, 1, 1, 1)
        return (x - x0) / sigma

    out = run_to_end(
        denoising(oracle, torch.randn(1, 4, 2, 4, 4), steps=5, shift=3.0, guidance_scale=0.0, has_actions=False)
    )
    assert torch.allclose(out, x0, atol=1e-5)


def test_action_free_guidance_combines_branches():
    noise = torch.zeros(1, 1, 1, 2, 2)
    calls = []

    def velocity(x, t, mask):
        calls.append(None if mask is None else mask.tolist())
        return torch.where(mask.view(-1, 1, 1, 1, 1), 1.0, 3.0).expand_as(x).clone()

    out = run_to_end(denoising(velocity, noise, steps=1, shift=1.0, guidance_scale=2.0, has_actions=True))
    # v = v_free + s (v_act - v_free) = 3 + 2 * (1 - 3) = -1; one Euler step from sigma 1 to 0 gives x = +1.
    assert calls == [[True, False]]
    assert torch.allclose(out, torch.ones_like(out))


def test_noise_augmentation_touches_only_one_x_slots():
    layout = HistoryConfig(first_frame=True, slots_4x=4, slots_2x=2, slots_1x=1)
    hist = History.from_latents(torch.randn(3, 16, 8, 4, 4))
    cfg = tiny_config().noise_aug
    always = noise_augment_history(hist, type(cfg)(prob=1.0, sigma_min=0.5, sigma_max=0.5), layout)
    changed = (always.latents != hist.latents).flatten(3).any(-1).any(1)[0].tolist()
    assert changed == [True, False, False, False, False, False, False, True]
    never = noise_augment_history(hist, type(cfg)(prob=0.0), layout)
    assert torch.equal(never.latents, hist.latents)


def test_pair_error_is_the_part_of_each_error_that_points_towards_another_future():
    shape = (1, 2, 1, 2, 2)  # 8 elements per sample
    x = torch.zeros(3, *shape[1:])
    x[1].view(-1)[0] = 2.0  # futures 0 and 1 are 2 apart along element 0; future 2 equals future 0
    p = x.clone()
    p[0].view(-1)[0] = 0.5  # 0.5 towards future 1: counts 0.5
    p[1].view(-1)[0] = 2.3  # past its own future, away from future 0: counts 0
    p[1].view(-1)[1] = 7.0  # across the direction that parts the futures: counts 0
    # Ordered pairs whose futures differ: (0, 1), (1, 0), (1, 2), (2, 1); only (0, 1) counts.
    assert pair_error(p, x).item() == pytest.approx(0.5**2 / 4 / 8)
    assert pair_error(p, x, torch.tensor([True, False, True])).item() == 0.0  # 0 and 2 share a future
    assert pair_error(p[:1], x[:1]).item() == 0.0
    gen = torch.Generator().manual_seed(0)
    x, p = torch.randn(4, 16, 2, 4, 4, generator=gen), torch.randn(4, 16, 2, 4, 4, generator=gen)
    terms = [
        max(0.0, float(torch.dot((x[i] - p[i]).flatten(), (x[i] - x[j]).flatten()) / (x[i] - x[j]).norm())) ** 2
        for i in range(4)
        for j in range(4)
        if i != j
    ]
    assert pair_error(p, x).item() == pytest.approx(sum(terms) / len(terms) / x[0].numel(), rel=1e-5)


def test_pair_term_is_added_in_family_batches_only():
    model = AstraWorldModel(tiny_config())
    with torch.no_grad():
        for expert in model.moae.experts[0]:
            expert.weight.normal_()
    history = History.from_latents(torch.randn(1, 16, 3, 8, 8).expand(3, -1, -1, -1, -1))
    target, actions = torch.randn(3, 16, 2, 8, 8), {"twist": torch.randn(3, 8, 6)}

    def terms(weight, family=True):
        gen = torch.Generator().manual_seed(0)
        return flow_matching_loss(
            model, target, history, actions, gen, action_dropout=False, family=family, pair_weight=weight
        )

    plain, weighted = terms(0.0), terms(3.0)
    assert plain.pair > 0 and torch.equal(plain.pair, weighted.pair)
    torch.testing.assert_close(weighted.total, plain.total + 3.0 * plain.pair)
    assert terms(3.0, family=False).pair == 0  # other batches' clips have their own histories
    torch.testing.assert_close(terms(3.0, family=False).total, terms(0.0, family=False).total)


def test_flow_matching_draws_its_sigmas_at_the_samplers_shift():
    model = AstraWorldModel(tiny_config()).eval()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, timestep, *args, **kwargs):
            seen.append(timestep)
            return model(x, timestep, *args, **kwargs)

    history = History.from_latents(torch.randn(2, 16, 3, 8, 8))
    flow_matching_loss(
        model, torch.randn(2, 16, 2, 8, 8), history, None, torch.Generator().manual_seed(3), forward=Spy()
    )
    drawn = torch.rand(2, generator=torch.Generator().manual_seed(3))  # the loss's first draw is its sigmas
    want = shift_sigma(drawn, model.config.sampler.shift)
    torch.testing.assert_close(seen[0], want * 1000)


def test_training_loss_trains_only_astra_parts():
    model = AstraWorldModel(tiny_config())
    gen = torch.Generator().manual_seed(0)
    terms = flow_matching_loss(
        model,
        torch.randn(2, 16, 2, 8, 8),
        History.from_latents(torch.randn(2, 16, 3, 8, 8)),
        {"twist": torch.randn(2, 8, 6)},
        generator=gen,
    )
    assert torch.isfinite(terms.total) and terms.flow > 0
    terms.total.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("moae.experts") for n in grads) and any(".attn1." in n for n in grads)
    assert not any(".attn2." in n or ".ffn." in n or n.startswith("vae.") for n in grads)
