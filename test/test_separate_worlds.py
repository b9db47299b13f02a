"""Separate worlds: a world's own copy of the trained weights (`WorldConfig.own_weights`), and what else a
world settles: which modalities command it together, and its guidance scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import own_worlds, randomise_action_path, tiny_config

from astra_model import AstraWorldModel
from astra_model.checkpoint import CheckpointError, load_model
from astra_model.config import WorldConfig
from astra_model.train import warm_start
from astra_model.worlds import guidance_scale_of, world_modalities, world_of, world_of_modality


def _trained_shared(seed: int = 0) -> AstraWorldModel:
    """A model without separate worlds whose trained weights are all random, as after training."""
    torch.manual_seed(seed)
    model = AstraWorldModel(tiny_config(extensions={"motion": True, "local_motion": True})).eval()
    randomise_action_path(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and not name.startswith("moae.experts"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def _separate(shared: AstraWorldModel, **overrides) -> AstraWorldModel:
    """`shared` with the joints world separate (and `overrides`), its copy starting from the shared weights."""
    model = AstraWorldModel(shared.config.replace(**{"worlds": own_worlds("joints"), **overrides})).eval()
    missing, unexpected = model.load_state_dict(shared.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("worlds.joints.") for k in missing)
    model.reset_worlds()
    return model


def _inputs():
    gen = torch.Generator().manual_seed(3)
    x, hist = torch.randn(2, 16, 2, 8, 8, generator=gen), torch.randn(2, 16, 3, 8, 8, generator=gen)
    acts = {"twist": torch.randn(2, 8, 6, generator=gen), "joints": torch.randn(2, 8, 4, generator=gen)}
    return x, torch.tensor([500.0, 200.0]), hist, acts


def test_a_new_separate_world_computes_what_the_shared_model_does():
    shared = _trained_shared()
    model = _separate(shared)
    x, t, hist, acts = _inputs()
    mask = torch.tensor([True, False])
    with torch.no_grad():
        for name in ("joints", "twist"):
            one = {name: acts[name]}
            assert torch.equal(model(x, t, one, hist).velocity, shared(x, t, one, hist).velocity), name
            masked = model(x, t, one, hist, action_mask=mask).velocity
            assert torch.equal(masked, shared(x, t, one, hist, action_mask=mask).velocity), name


def test_each_world_trains_only_its_own_weights():
    model = _separate(_trained_shared()).train()
    x, t, hist, acts = _inputs()
    for name in ("joints", "twist"):
        model.zero_grad(set_to_none=True)
        model(x, t, {name: acts[name]}, hist).velocity.square().mean().backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        in_world = {n for n in grads if n.startswith("worlds.joints.")}
        if name == "joints":
            assert grads == in_world and any(".attn1." in n for n in grads) and any(".adapters." in n for n in grads)
        else:
            assert grads and not in_world


def test_the_worlds_part_once_a_world_copy_changes():
    model = _separate(_trained_shared())
    x, t, hist, acts = _inputs()
    before = {name: model(x, t, {name: acts[name]}, hist).velocity.detach() for name in ("joints", "twist")}
    with torch.no_grad():
        model.worlds["joints"].adapters[0].weight.mul_(1.5)
        after = {name: model(x, t, {name: acts[name]}, hist).velocity for name in ("joints", "twist")}
    assert torch.equal(after["twist"], before["twist"])
    assert not torch.allclose(after["joints"], before["joints"])


def test_a_separate_world_takes_its_actions_alone():
    model = _separate(_trained_shared())
    x, t, hist, acts = _inputs()
    with pytest.raises(ValueError, match=r"\(twist -> shared, joints -> joints\): .* must come from one world"):
        model(x, t, acts, hist)
    with pytest.raises(ValueError, match=r"worlds\['arm'\] must name modalities \(unknown: \['arm'\]\)"):
        tiny_config(worlds=own_worlds("arm"))


def test_each_world_samples_at_its_own_guidance_scale(seed_frames):
    model = _separate(
        _trained_shared(), sampler={"guidance_scale": 1.5}, worlds=own_worlds("joints", guidance_scale=3.0)
    )
    joints = {"joints": np.linspace(-1, 1, 8 * 4, dtype=np.float32).reshape(8, 4)}
    twist = {"twist": np.linspace(1, -1, 8 * 6, dtype=np.float32).reshape(8, 6)}

    def chunk(actions, scale=None):
        return model.start(seed_frames, seed=5).step(actions, guidance_scale=scale, steps=2)

    assert np.array_equal(chunk(joints), chunk(joints, 3.0))
    assert not np.array_equal(chunk(joints), chunk(joints, 1.5))
    assert np.array_equal(chunk(twist), chunk(twist, 1.5))
    assert not np.array_equal(chunk(twist), chunk(twist, 3.0))


def test_world_guidance_scales_are_finite_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"worlds\['joints'\]\.guidance_scale must be finite"):
        tiny_config(worlds=own_worlds("joints", guidance_scale=float("nan")))
    model = _separate(_trained_shared(), worlds=own_worlds("joints", guidance_scale=2.5))
    model.save_pretrained(tmp_path)
    assert load_model(tmp_path).config.worlds["joints"].guidance_scale == 2.5


def test_worlds_take_the_modalities_no_world_names_into_the_shared_world():
    config = tiny_config(
        worlds={"arm": {"modalities": ["joints"], "guidance_scale": 3.0}, "car": {"modalities": ["twist"]}},
        sampler={"guidance_scale": 1.5},
    )
    assert world_modalities(config) == {"shared": ("camera_pose",), "arm": ("joints",), "car": ("twist",)}
    assert world_of_modality("camera_pose", config) == "shared" and world_of(["twist"], config) == "car"
    assert (guidance_scale_of(["joints"], config), guidance_scale_of(["twist"], config)) == (3.0, 1.5)
    assert world_of(None, config) is None and AstraWorldModel(config).worlds.keys() == set()  # no own weights
    with pytest.raises(ValueError, match=r"\['joints'\] are in several"):
        tiny_config(worlds={"arm": {"modalities": ["joints"]}, "other": {"modalities": ["joints", "twist"]}})
    with pytest.raises(ValueError, match=r"worlds names 'shared', the world of the modalities in no world"):
        tiny_config(worlds={"shared": {"modalities": ["joints"]}})


def test_save_load_keeps_the_worlds_bit_exact_and_a_shared_checkpoint_does_not_fit(tmp_path):
    shared = _trained_shared()
    model = _separate(shared)
    with torch.no_grad():
        model.worlds["joints"].moae.experts[0][0].weight.add_(1.0)
    model.save_pretrained(tmp_path / "worlds")
    loaded = load_model(tmp_path / "worlds")
    assert loaded.config.worlds == {"joints": WorldConfig(["joints"], own_weights=True)}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    shared.save_pretrained(tmp_path / "shared")
    (tmp_path / "shared/config.json").write_text((tmp_path / "worlds/config.json").read_text())
    with pytest.raises(CheckpointError, match=r"missing key 'worlds\.joints\."):
        load_model(tmp_path / "shared")


def test_warm_start_from_a_shared_model_copies_its_weights_into_the_world(tmp_path):
    shared = _trained_shared(seed=1)
    shared.save_pretrained(tmp_path / "shared")
    model = AstraWorldModel(shared.config.replace(worlds=own_worlds("joints")))
    assert warm_start(model, tmp_path / "shared") == []
    params = dict(model.named_parameters())
    names = model.shared_names()
    assert names["worlds.joints.attn1.0.to_q.weight"] == "backbone.blocks.0.attn1.to_q.weight"
    assert names["worlds.joints.adapters.1.bias"] == "adapters.1.bias"
    for world_name, shared_name in names.items():
        assert torch.equal(params[world_name], dict(shared.named_parameters())[shared_name]), world_name
