"""The adapters are wired right: a fresh Astra model is exactly its frozen backbone."""

from __future__ import annotations

import pytest
import torch
from conftest import randomise_action_path, tiny_config
from diffusers import WanTransformer3DModel

from astra_model import AstraConfig, AstraWorldModel, History

PAPER_TRAINABLE = 366.8e6


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    ("moae", "extensions"),
    [
        ({"routing": "learned"}, {}),
        ({"routing": "modality"}, {}),
        ({"routing": "learned"}, {"spatial": True, "motion": True}),
    ],
)
def test_fresh_model_reproduces_plain_wan_for_any_actions(wan_folder, moae, extensions):
    model = AstraWorldModel.from_wan(
        wan_folder,
        modalities={"twist": 6, "joints": 4},
        chunk_latent_frames=2,
        moae=moae,
        extensions=extensions,
        text_len=3,
    ).eval()
    plain = WanTransformer3DModel.from_pretrained(f"{wan_folder}/transformer").eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 2, 8, 8, generator=gen)
    t = torch.tensor([900.0, 37.0])
    text = torch.randn(2, 3, 32, generator=gen)
    with torch.no_grad():
        expected = plain(x, t, text).sample
        for scale in (0.0, 1.0, 1e3):
            actions = {
                "twist": scale * torch.randn(2, 8, 6, generator=gen),
                "joints": torch.randn(2, 8, 4, generator=gen),
            }
            got = model.predict_velocity(x, t, actions, text_embeds=text)
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert _rel_err(got, expected) <= 1e-5
        assert _rel_err(model.predict_velocity(x, t, None, text_embeds=text), expected) <= 1e-5


def test_trained_action_path_changes_the_prediction(tiny_model):
    randomise_action_path(tiny_model)
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0])
    with torch.no_grad():
        a = tiny_model.predict_velocity(x, t, {"twist": torch.ones(1, 8, 6)})
        b = tiny_model.predict_velocity(x, t, {"twist": -torch.ones(1, 8, 6)})
    assert _rel_err(a, b) > 1e-3


def test_dropped_actions_neither_embed_nor_move_tokens():
    torch.manual_seed(0)
    model = AstraWorldModel(AstraConfig.preset("tiny").replace(extensions={"spatial": True, "motion": True})).eval()
    randomise_action_path(model)
    with torch.no_grad():
        model.extensions.motion.head.weight.normal_(0, 0.5)
    x, t, hist = torch.randn(2, 16, 2, 8, 8), torch.tensor([500.0, 200.0]), torch.randn(2, 16, 3, 8, 8)
    acts = {"twist": torch.randn(2, 8, 6)}
    with torch.no_grad():
        free = model(x, t, None, hist).velocity
        masked = model(x, t, acts, hist, action_mask=torch.tensor([True, False])).velocity
        both = model(x, t, acts, hist).velocity
    assert torch.equal(masked[1], free[1])
    torch.testing.assert_close(masked[0], both[0])
    assert _rel_err(both[0], free[0]) > 1e-3


@pytest.mark.parametrize("with_actions", [False, True])
def test_history_commands_reach_the_prediction_only_when_enabled(with_actions):
    torch.manual_seed(0)
    model = AstraWorldModel(AstraConfig.preset("tiny").replace(history={"with_actions": with_actions})).eval()
    x, t, acts = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0]), {"twist": torch.ones(1, 8, 6)}
    latents = torch.randn(1, 16, 3, 8, 8)

    def predict(history_twist: float) -> torch.Tensor:
        history = History(latents, torch.arange(3), {"twist": torch.full((1, 3, 24), history_twist)})
        with torch.no_grad():
            return model.predict_velocity(x, t, acts, history)

    assert torch.equal(predict(1.0), predict(-1.0))  # experts at zero: no action path yet
    randomise_action_path(model)
    differs = _rel_err(predict(1.0), predict(-1.0)) > 1e-3
    assert differs == with_actions


def test_trainable_split_follows_the_paper(tiny_model):
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("backbone.blocks.", "adapters.", "history_embedder.", "moae.")) for n in trainable)
    backbone_trainable = {n for n in trainable if n.startswith("backbone.")}
    assert backbone_trainable and all(".attn1." in n for n in backbone_trainable)
    frozen = {n for n, p in tiny_model.named_parameters() if not p.requires_grad}
    for part in (
        "attn2",
        "ffn",
        "scale_shift_table",
        "patch_embedding",
        "proj_out",
        "condition_embedder",
        "vae.",
    ):
        assert any(part in n for n in frozen), part
    assert tiny_model.num_parameters(trainable_only=True) == sum(
        p.numel() for n, p in tiny_model.named_parameters() if n in trainable
    )


def test_paper_scale_trainable_count_on_meta_device():
    with torch.device("meta"):
        model = AstraWorldModel(AstraConfig.preset("wan2.1-t2v-1.3b"))
    count = model.num_parameters(trainable_only=True)
    assert abs(count - PAPER_TRAINABLE) / PAPER_TRAINABLE < 0.05, count
    assert model.backbone.patch_embedding.weight.device.type == "meta"


def test_adapters_start_as_identity_and_experts_at_zero(tiny_model):
    for adapter in tiny_model.adapters:
        assert torch.equal(adapter.weight, torch.eye(adapter.weight.shape[0]))
        assert torch.count_nonzero(adapter.bias) == 0
    for block in tiny_model.moae.experts:
        for expert in block:
            assert torch.count_nonzero(expert.weight) == 0 and torch.count_nonzero(expert.bias) == 0


def test_history_commands_nobody_gave_read_as_the_typical_command() -> None:
    """A rollout started from frames alone does not know the commands that made them. The history then
    reads the training mean (standardised to zero), not zeros: a relative pose of zeros has a zero
    quaternion, thousands of standard deviations from any pose the model was trained on."""
    torch.manual_seed(0)
    stats = {"camera_pose": {"mean": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.999], "std": [0.1] * 6 + [0.001]}}
    config = tiny_config(history={"with_actions": True}, action_stats=stats)
    model = AstraWorldModel(config).eval()
    history = History.from_latents(torch.randn(1, 16, 3, 4, 4))  # no commands with the frames
    pose = torch.zeros(1, 2, config.action_input_dim("camera_pose") - 1)
    inputs, _ = model._history_commands({"camera_pose": pose}, history)
    expected = torch.tensor(stats["camera_pose"]["mean"]).repeat(config.stacked_frames)
    assert torch.allclose(inputs["camera_pose"], expected.expand_as(inputs["camera_pose"]))
    standardised = model.moae.encode(inputs, history_flag=1.0)  # reads as exactly the typical command
    typical = model.moae.encode({"camera_pose": expected.expand_as(inputs["camera_pose"])}, history_flag=1.0)
    assert torch.equal(standardised["camera_pose"], typical["camera_pose"])
