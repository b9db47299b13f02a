"""Loading the official Astra release (DiffSynth naming) onto AstraWorldModel, on a synthetic checkpoint."""

from __future__ import annotations

import pytest
import torch

from astra_model.checkpoint import CheckpointError
from astra_model.config import AstraConfig
from astra_model.official import load_official_astra, rename_official_key

DIM, FFN, TEXT, FREQ, LAYERS, UNIFIED = 64, 128, 32, 64, 2, 25


def _official_state() -> dict[str, torch.Tensor]:
    """A small checkpoint with exactly the key names and layouts of the release's WanModelMoe."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    s = {
        "patch_embedding.weight": r(DIM, 16, 1, 2, 2),
        "patch_embedding.bias": r(DIM),
        "text_embedding.0.weight": r(DIM, TEXT),
        "text_embedding.0.bias": r(DIM),
        "text_embedding.2.weight": r(DIM, DIM),
        "text_embedding.2.bias": r(DIM),
        "time_embedding.0.weight": r(DIM, FREQ),
        "time_embedding.0.bias": r(DIM),
        "time_embedding.2.weight": r(DIM, DIM),
        "time_embedding.2.bias": r(DIM),
        "time_projection.1.weight": r(6 * DIM, DIM),
        "time_projection.1.bias": r(6 * DIM),
        "head.head.weight": r(64, DIM),
        "head.head.bias": r(64),
        "head.modulation": r(1, 2, DIM),
        "clean_x_embedder.proj.weight": r(DIM, 16, 1, 2, 2),
        "clean_x_embedder.proj.bias": r(DIM),
        "clean_x_embedder.proj_2x.weight": r(DIM, 16, 2, 4, 4),
        "clean_x_embedder.proj_2x.bias": r(DIM),
        "clean_x_embedder.proj_4x.weight": r(DIM, 16, 4, 8, 8),
        "clean_x_embedder.proj_4x.bias": r(DIM),
        "sekai_processor.projector.0.weight": r(UNIFIED, 13),
        "sekai_processor.projector.0.bias": r(UNIFIED),
        "nuscenes_processor.projector.0.weight": r(UNIFIED, 8),
        "nuscenes_processor.projector.0.bias": r(UNIFIED),
        "openx_processor.projector.0.weight": r(UNIFIED, 13),
        "openx_processor.projector.0.bias": r(UNIFIED),
        "global_router.weight": r(3, UNIFIED),
        "global_router.bias": r(3),
    }
    for i in range(LAYERS):
        p = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                s[f"{p}{attn}.{proj}.weight"], s[f"{p}{attn}.{proj}.bias"] = r(DIM, DIM), r(DIM)
            s[f"{p}{attn}.norm_q.weight"], s[f"{p}{attn}.norm_k.weight"] = r(DIM), r(DIM)
        s[f"{p}norm3.weight"], s[f"{p}norm3.bias"] = r(DIM), r(DIM)
        s[f"{p}ffn.0.weight"], s[f"{p}ffn.0.bias"] = r(FFN, DIM), r(FFN)
        s[f"{p}ffn.2.weight"], s[f"{p}ffn.2.bias"] = r(DIM, FFN), r(DIM)
        s[f"{p}modulation"] = r(1, 6, DIM)
        s[f"{p}projector.weight"], s[f"{p}projector.bias"] = r(DIM, DIM), r(DIM)
        s[f"{p}cam_encoder.weight"], s[f"{p}cam_encoder.bias"] = r(DIM, 13), r(DIM)
        for e in range(3):
            s[f"{p}moe.experts.{e}.0.weight"], s[f"{p}moe.experts.{e}.0.bias"] = r(DIM, UNIFIED), r(DIM)
    return s


@pytest.fixture()
def official_ckpt(tmp_path):
    state = _official_state()
    path = tmp_path / "diffusion_pytorch_model.ckpt"
    torch.save(state, path)
    return path, state


def test_release_checkpoint_lands_on_the_right_modules(official_ckpt):
    path, state = official_ckpt
    with pytest.warns(UserWarning, match="random weights"):
        model = load_official_astra(path, head_dim=32, vae_config=AstraConfig.preset("tiny").vae)
    cfg = model.config
    assert cfg.modalities == {"camera_pose": 12, "ego_pose": 7, "robot_pose": 12}
    assert cfg.moae.routing == "modality" and cfg.moae.num_experts == 3 and cfg.moae.unified_dim == UNIFIED
    assert cfg.moae.modality_experts == {"camera_pose": 0, "ego_pose": 1, "robot_pose": 2}
    assert cfg.action_grouping == "mean" and cfg.backbone["num_layers"] == LAYERS
    blk = model.backbone.blocks[1]
    pairs = [
        (blk.attn1.to_q.weight, "blocks.1.self_attn.q.weight"),
        (blk.attn1.to_out[0].bias, "blocks.1.self_attn.o.bias"),
        (blk.attn1.norm_k.weight, "blocks.1.self_attn.norm_k.weight"),
        (blk.attn2.to_v.weight, "blocks.1.cross_attn.v.weight"),
        (blk.norm2.weight, "blocks.1.norm3.weight"),
        (blk.ffn.net[0].proj.weight, "blocks.1.ffn.0.weight"),
        (blk.ffn.net[2].bias, "blocks.1.ffn.2.bias"),
        (blk.scale_shift_table, "blocks.1.modulation"),
        (model.adapters[1].weight, "blocks.1.projector.weight"),
        (model.moae.experts[1][2].weight, "blocks.1.moe.experts.2.0.weight"),
        (model.moae.encoders["ego_pose"].weight, "nuscenes_processor.projector.0.weight"),
        (model.history_embedder.proj_4x.weight, "clean_x_embedder.proj_4x.weight"),
        (model.backbone.proj_out.weight, "head.head.weight"),
        (model.backbone.scale_shift_table, "head.modulation"),
        (model.backbone.condition_embedder.time_proj.weight, "time_projection.1.weight"),
        (model.backbone.condition_embedder.text_embedder.linear_2.weight, "text_embedding.2.weight"),
    ]
    for tensor, key in pairs:
        assert torch.equal(tensor, state[key]), key
    # The release routes sekai (camera_pose) to expert 0 with weight 1.
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([500.0])
    with torch.no_grad():
        v = model.predict_velocity(x, t, {"camera_pose": torch.randn(1, 8, 12)})
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_skipped_and_unknown_keys():
    assert rename_official_key("blocks.3.cam_encoder.weight") is None
    assert rename_official_key("global_router.bias") is None
    assert rename_official_key("blocks.12.self_attn.o.weight") == "backbone.blocks.12.attn1.to_out.0.weight"
    with pytest.raises(CheckpointError, match=r"unrecognised key 'blocks\.0\.lora_A\.weight'"):
        rename_official_key("blocks.0.lora_A.weight")


def test_corrupt_release_file_is_named(tmp_path):
    bad = tmp_path / "astra.ckpt"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=r"astra\.ckpt: corrupt"):
        load_official_astra(bad, vae_config={})
