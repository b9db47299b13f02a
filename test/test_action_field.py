"""The action field (`extensions.action_field`): per-token embeddings, nonlinear in the commands, that depend
on where the token is and vanish where the actions were dropped; its render head (`action_field.render`)
and the loss term that trains it. That a fresh field changes nothing is checked with the other
per-token heads in test_local_motion.py."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import added_term, randomise_action_path, tiny_config, trained

from astra_model import AstraWorldModel
from astra_model.action_field import ActionField, latent_tokens, widened
from astra_model.moae import Routed
from astra_model.rope import grid_positions
from astra_model.train import warm_start
from astra_model.training import render_error


def test_position_features_are_the_coordinates_and_their_octaves():
    field = ActionField(3, 8, 2, octaves=2)
    enc = field.encode_position(torch.tensor([[0.5, -0.25]]))
    assert enc.shape == (1, 2 + 4 * 2)
    x, y = 0.5, -0.25
    expected = [x, y, *(math.sin(a) for a in (math.pi * x, math.pi * y, 2 * math.pi * x, 2 * math.pi * y))]
    expected += [math.cos(a) for a in (math.pi * x, math.pi * y, 2 * math.pi * x, 2 * math.pi * y)]
    torch.testing.assert_close(enc[0], torch.tensor(expected))


def test_each_token_gets_its_own_embedding_per_block_and_frame():
    field = trained(ActionField(3, 8, 2, hidden=16), std=0.5)
    xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]).repeat(2, 1)  # 2 frames x 4 tokens
    features = torch.randn(2, 2, 3)
    out, rendered = field(features, torch.ones(2, 2, 1), xy)
    assert out.shape == (2, 8, 2, 8) and out.dtype == torch.float32 and rendered is None
    assert not torch.allclose(out[:, 0], out[:, 3])  # two corners of one frame differ
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])  # so do the blocks
    same, _ = field(features[:, :1].expand(-1, 2, -1), torch.ones(2, 2, 1), xy)
    torch.testing.assert_close(same[:, :4], same[:, 4:])  # same commands, same place: same embedding
    doubled, _ = field(2 * features, torch.ones(2, 2, 1), xy)
    assert not torch.allclose(doubled, 2 * out)  # not linear in the commands, unlike the experts


def test_dropped_actions_get_no_field():
    field = trained(ActionField(3, 64, 2), std=0.5)
    features, gates = torch.randn(2, 2, 3), torch.tensor([[[1.0, 0, 0]] * 2, [[0.0, 0, 0]] * 2])
    out, rendered = field.embed([Routed(features, gates)], grid_positions(torch.arange(2), 3, 4), 3, 4)
    assert out.shape == (2, 2 * 12, 2, 64) and rendered is None
    assert out[0].abs().min() > 0 and not out[1].any()


def test_the_field_trains_with_the_action_path_and_changes_predictions_once_trained():
    x, t, hist = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 16, 3, 8, 8)
    acts = {"twist": torch.randn(1, 8, 6)}
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(extensions={"action_field": {"worlds": ["shared"]}})).eval()
    assert all(p.requires_grad for p in model.extensions.action_field.parameters())
    with torch.no_grad():
        before = model(x, t, acts, hist).velocity
        torch.manual_seed(1)
        model.extensions.action_field.net[-1].weight.normal_(std=0.5)
        assert not torch.allclose(model(x, t, acts, hist).velocity, before)


def test_a_widened_field_computes_what_the_narrow_one_did():
    narrow = trained(ActionField(3, 8, 2, hidden=16), std=0.5)
    wide = ActionField(3, 8, 2, hidden=40)
    with torch.no_grad():
        for (name, old), new in zip(narrow.state_dict().items(), wide.state_dict().values(), strict=True):
            new.copy_(widened(old, new))
            assert torch.equal(new[tuple(slice(n) for n in old.shape)], old), name
    assert wide.net[0].weight[16:].abs().min() > 0  # the new units read the inputs from the start
    assert not wide.net[2].weight[:16, 16:].any() and not wide.net[4].weight[:, 16:].any()
    xy = torch.rand(6, 2) * 2 - 1
    features = torch.randn(2, 2, 3)
    torch.testing.assert_close(wide(features, torch.ones(2, 2, 1), xy)[0], narrow(features, torch.ones(2, 2, 1), xy)[0])
    with pytest.raises(ValueError, match=r"a field tensor \[40, 5\] does not fit in one \[16, 5\]"):
        widened(torch.zeros(40, 5), torch.zeros(16, 5))


def test_a_wider_field_warm_starts_from_a_narrow_one_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    narrow = AstraWorldModel(tiny_config(extensions={"action_field": {"worlds": ["shared"], "hidden": 16}})).eval()
    randomise_action_path(narrow)
    trained(narrow.extensions.action_field, std=0.3)
    narrow.save_pretrained(tmp_path)
    config = narrow.config.replace(extensions={"action_field": {"hidden": 48}})
    wide = AstraWorldModel(config, backbone=narrow.backbone, vae=narrow.vae)
    wide.set_trainable()
    assert warm_start(wide, tmp_path) == [] and wide.extensions.action_field.net[0].weight.shape[0] == 48
    x, t, hist = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 16, 3, 8, 8)
    acts = {"twist": torch.randn(1, 8, 6)}
    with torch.no_grad():
        expected, got = narrow(x, t, acts, hist).velocity, wide.eval()(x, t, acts, hist).velocity
    assert narrow.extensions.action_field.net[-1].weight.abs().min() > 0  # the saved field does change predictions
    torch.testing.assert_close(got, expected)
    assert AstraWorldModel.from_pretrained(tmp_path).config.extensions.action_field.hidden == 16


def test_the_field_width_must_be_positive():
    with pytest.raises(ValueError, match=r"extensions\.action_field\.hidden must be >= 1, got 0"):
        tiny_config(extensions={"action_field": {"worlds": ["shared"], "hidden": 0}})


def test_a_renderer_joins_a_saved_field_without_changing_its_predictions(tmp_path):
    torch.manual_seed(0)
    plain = AstraWorldModel(tiny_config(extensions={"action_field": {"worlds": ["shared"]}})).eval()
    randomise_action_path(plain)
    trained(plain.extensions.action_field, std=0.3)
    plain.save_pretrained(tmp_path)
    config = plain.config.replace(extensions={"action_field": {"render": True}})
    rendering = AstraWorldModel(config, backbone=plain.backbone, vae=plain.vae)
    rendering.set_trainable()
    fresh = warm_start(rendering, tmp_path)
    assert fresh == sorted(f"extensions.action_field.renderer.{i}.{k}" for i in (0, 2, 4) for k in ("bias", "weight"))
    field = rendering.extensions.action_field
    inputs = plain.extensions.action_field.net[0].in_features
    assert field.net[0].in_features == inputs + 4 * 16 and not field.net[0].weight[:, inputs:].any()
    trained(field.renderer, std=0.3)  # a fitted renderer draws something
    x, t, hist = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 16, 3, 8, 8)
    acts = {"twist": torch.randn(1, 8, 6)}
    rendering.eval()
    with torch.no_grad():
        expected, got = plain(x, t, acts, hist), rendering(x, t, acts, hist)
        torch.testing.assert_close(got.velocity, expected.velocity)  # the field reads the drawing with zero weight
        assert expected.field_render is None and rendering(x, t, None, hist).field_render is None
        assert got.field_render.shape == (1, 2 * 4 * 4, 4 * 16)  # 2 frames of 4 x 4 tokens, 2 x 2 x 16 latents each
        torch.testing.assert_close(rendering.field_drawing(acts, x.shape), got.field_render)  # without the transformer
        assert plain.field_drawing(acts, x.shape) is None
        field.net[0].weight[:, inputs:].normal_(std=0.5)
        assert not torch.allclose(rendering(x, t, acts, hist).velocity, expected.velocity)  # once it reads it


def test_latent_tokens_are_wan_patches_frame_major():
    latents = torch.arange(2 * 3 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 3, 2, 4, 6)  # [B, C, F, h, w]
    tokens = latent_tokens(latents)
    assert tokens.shape == (2, 2 * 2 * 3, 4 * 3)  # 2 frames of 2 x 3 tokens, 2 x 2 x 3 latent pixels each
    # Token 4 is frame 0, row 1, column 1: latent pixels (2:4, 2:4) of each channel, channel-major.
    torch.testing.assert_close(tokens[0, 4], latents[0, :, 0, 2:4, 2:4].flatten())
    torch.testing.assert_close(tokens[1, 6], latents[1, :, 1, 0:2, 0:2].flatten())


def test_render_error_compares_each_token_with_its_own_latent_pixels():
    target = torch.randn(2, 3, 2, 4, 6)  # [B, C, F, h, w]: 2 x 3 tokens of 2 x 2 latent pixels per frame
    # Token (f, r, c) holds target[:, :, f, 2r:2r+2, 2c:2c+2], channel-major as pixel_unshuffle orders it.
    tokens = target.reshape(2, 3, 2, 2, 2, 3, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(2, 12, 12)
    assert render_error(target, tokens).item() == 0.0
    off = tokens + torch.tensor([1.0, 3.0]).view(2, 1, 1)
    assert render_error(target, off).item() == pytest.approx(5.0)  # (1 + 9) / 2
    assert render_error(target, off, torch.tensor([True, False])).item() == pytest.approx(1.0)
    assert render_error(target, off, torch.tensor([False, False])).item() == 0.0  # every command dropped


def test_the_render_term_is_added_with_its_weight_and_trains_the_renderer_alone():
    model, render = added_term(
        {"action_field": {"worlds": ["shared"], "render": True}}, "field_render_weight", "render"
    )
    assert render > 0
    render.backward()
    # The render term trains the renderer alone: the field and the encoders behind it learn from the flow.
    assert all(p.grad.abs().sum() > 0 for p in model.extensions.action_field.renderer.parameters())
    field = model.extensions.action_field
    assert all(p.grad is None for p in (*field.net.parameters(), *model.moae.encoders.parameters()))
    assert added_term({"action_field": {"worlds": ["shared"]}}, "field_render_weight", "render")[1] == 0  # no renderer


def test_only_the_worlds_the_field_names_have_one():
    worlds = {"arm": {"modalities": ["joints"], "own_weights": True}, "car": {"modalities": ["twist"]}}
    config = tiny_config(worlds=worlds, extensions={"action_field": {"worlds": ["arm", "car"]}})
    model = AstraWorldModel(config).eval()
    # The worlds on the shared weights (car, and camera_pose's shared world) share one field, which serves car.
    assert model.worlds["arm"].extensions.action_field is not None and model.extensions.action_field is not None
    assert model.action_field_of(["twist"]) is model.extensions.action_field
    assert model.action_field_of(["camera_pose"]) is None
    unnamed = AstraWorldModel(config.replace(extensions={"action_field": {"worlds": ["arm"]}}))
    assert unnamed.extensions.action_field is None and not any(
        ".action_field." in n for n, _ in unnamed.named_parameters() if not n.startswith("worlds.arm.")
    )
    with pytest.raises(ValueError, match=r"action_field\.worlds must name worlds \(unknown: \['joints'\]\)"):
        tiny_config(worlds=worlds, extensions={"action_field": {"worlds": ["joints"]}})


def test_the_field_adds_to_the_worlds_it_names_only():
    torch.manual_seed(0)
    worlds = {"car": {"modalities": ["twist"]}, "flight": {"modalities": ["camera_pose"]}}
    model = AstraWorldModel(tiny_config(worlds=worlds, extensions={"action_field": {"worlds": ["car"]}})).eval()
    randomise_action_path(model)
    x, t, hist = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), torch.randn(1, 16, 3, 8, 8)
    acts = {"twist": torch.randn(1, 8, 6), "camera_pose": torch.randn(1, 8, 7)}
    with torch.no_grad():
        before = {m: model(x, t, {m: a}, hist).velocity for m, a in acts.items()}
        trained(model.extensions.action_field, std=0.5)
        after = {m: model(x, t, {m: a}, hist).velocity for m, a in acts.items()}
    assert not torch.allclose(after["twist"], before["twist"])
    assert torch.equal(after["camera_pose"], before["camera_pose"])  # the same weights, but no field in its world
