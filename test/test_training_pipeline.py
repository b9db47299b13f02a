"""Data generation, bag dataset, clip sampling and the staged trainer, on a few tiny recorded episodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file

from astra_model import AstraWorldModel
from astra_model.checkpoint import read_config
from astra_model.data import LatentClips, VideoEpisode, action_stats, produced_by
from astra_model.recipe import load_recipe, run_recipe
from astra_model.train import (
    RENDERER_PARTS,
    TrainConfig,
    latest_checkpoint,
    lr_at,
    param_groups,
    renderer_stage,
    train,
    warm_start,
    world_model_stage,
)
from astra_ros.datagen import ACTION_TOPICS, IMAGE_TOPIC, branch_frame
from astra_ros.datagen import main as datagen
from astra_ros.dataset import load_bag_episodes
from astra_ros.train import load_episodes

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch"]


def test_produced_by_shifts_commands_one_frame():
    zoh = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert produced_by(zoh).tolist() == [[0, 1], [0, 1], [2, 3], [4, 5]]


def test_action_stats_cover_the_frames_commands_made():
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    twist = np.array([[9, 0, 0, 0, 0, 5], [1, 0, 0, 0, 0, 5], [3, 0, 0, 0, 0, 5]], np.float32)
    stats = action_stats([VideoEpisode(frames, {"twist": twist}, "ep")], tiny_config())
    # Row 0 made no frame; a constant element gets std 1 so that it is left as it is.
    assert stats == {"twist": {"mean": [2.0, 0, 0, 0, 0, 5], "std": [np.sqrt(2.0), 1, 1, 1, 1, 1]}}


def _numbered_clips(cfg) -> LatentClips:
    """One random 21-frame episode whose twist command at frame t is t in every element."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**cfg.vae).eval()
    frames = np.random.default_rng(0).integers(0, 255, (21, 32, 32, 3), dtype=np.uint8)
    actions = np.arange(21, dtype=np.float32)[:, None].repeat(6, axis=1)
    return LatentClips([VideoEpisode(frames, {"twist": actions}, "ep")], vae, cfg, cache_dir=None)


def test_clips_take_history_before_and_actions_of_the_chunk():
    cfg = tiny_config()
    clips = _numbered_clips(cfg).sample(2, "twist", np.random.default_rng(3))
    history, target, acts = clips.history, clips.target, clips.actions
    assert not clips.family
    j0 = history.next_index
    assert target.shape == (2, 16, 2, 4, 4) and acts["twist"].shape == (2, 8, 6)
    # Latent frame j0 holds video frames 4*j0-3 .. 4*j0; its actions start there.
    assert acts["twist"][0, :, 0].tolist() == list(range(4 * j0 - 3, 4 * j0 + 5))
    assert history.indices.tolist() == list(range(j0))[: cfg.history.capacity]


def test_clips_give_history_frames_the_commands_that_produced_them():
    history = (
        _numbered_clips(tiny_config(history={"with_actions": True}))
        .sample(2, "twist", np.random.default_rng(3))
        .history
    )
    twist = history.actions["twist"]
    assert twist.shape == (2, history.length, 4 * 6)
    for position, j in enumerate(history.indices.tolist()):
        # Latent frame 0's command is unknown, as at the start of a rollout; frame j >= 1 holds video frames 4j-3 .. 4j.
        expected = [0.0] * 4 if j == 0 else list(range(4 * j - 3, 4 * j + 1))
        assert twist[1, position, ::6].tolist() == expected


def _branched_clips(cfg) -> LatentClips:
    """Three 21-frame episodes equal up to video frame 8 (latent frames 0-2), then apart, and one unrelated."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**cfg.vae).eval()
    rng = np.random.default_rng(0)
    trunk = rng.integers(0, 255, (21, 32, 32, 3), dtype=np.uint8)
    episodes = []
    for b in range(4):
        frames = rng.integers(0, 255, trunk.shape, dtype=np.uint8)
        if b < 3:
            frames[:9] = trunk[:9]
        actions = np.full((21, 6), float(b), dtype=np.float32)
        episodes.append(VideoEpisode(frames, {"twist": actions}, f"ep{b}"))
    return LatentClips(episodes, vae, cfg, cache_dir=None)


def test_clips_find_where_branches_part_and_start_batches_there():
    cfg = tiny_config(history={"with_actions": True})
    clips = _branched_clips(cfg)
    # Frame 9 is the first video frame of latent frame 3, so the causal VAE's latents part there.
    assert {m: [(p.members, p.frame) for p in ps] for m, ps in clips.partings.items()} == {"twist": [([0, 1, 2], 3)]}
    batch = clips.sample(6, "twist", np.random.default_rng(0), parting_prob=1.0)
    history, target, acts = batch.history, batch.target, batch.actions
    assert batch.family and history.next_index == 3
    assert torch.equal(history.latents, history.latents[:1].expand_as(history.latents))  # one shared past
    members = acts["twist"][:, 0, 0].tolist()
    assert set(members) <= {0.0, 1.0, 2.0} and len(set(members)) > 1  # several futures, never the unrelated one
    a, b = members.index(members[0]), next(i for i, m in enumerate(members) if m != members[0])
    assert not torch.equal(target[a], target[b])
    starts = {clips.sample(2, "twist", np.random.default_rng(s)).history.next_index for s in range(20)}
    assert len(starts) > 1  # without parting_prob, starts stay uniform


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    datagen(["--episodes", "1", "--frames", "21", "--image-size", "32", "--out", str(root / "train")])
    datagen(["--episodes", "2", "--frames", "21", "--image-size", "32", "--seed", "900", "--out", str(root / "val")])
    return root


def test_datagen_bags_read_back_with_their_own_topics(recorded):
    episodes = load_bag_episodes([str(recorded / "train/*/seed_*")], IMAGE_TOPIC, ACTION_TOPICS, JOINTS)
    assert len(episodes) == 3
    by_modality = {next(iter(ep.actions)): ep for ep in episodes}
    assert set(by_modality) == {"twist", "joints", "camera_pose"}
    for modality, ep in by_modality.items():
        assert ep.frames.shape == (21, 32, 32, 3) and ep.actions[modality].shape[0] == 21


def test_datagen_branches_share_the_past_and_part_at_the_branch_frame(recorded, tmp_path):
    args = ["--domains", "mobile", "--episodes", "1", "--frames", "21", "--image-size", "32", "--branches", "2"]
    datagen([*args, "--out", str(tmp_path)])
    names = sorted(p.name for p in (tmp_path / "mobile").iterdir())
    assert names == ["seed_00000", "seed_00000_b1", "seed_00000_b2"]
    topics = {"twist": ACTION_TOPICS["twist"]}
    trunk, *branches = (load_bag_episodes([str(tmp_path / "mobile" / n)], IMAGE_TOPIC, topics)[0] for n in names)
    plain = load_bag_episodes([str(recorded / "train/mobile/seed_00000")], IMAGE_TOPIC, topics)[0]
    assert np.array_equal(trunk.frames, plain.frames)  # branch 0 is the ordinary recording
    # Row t of the actions produced frame t: the first resampled command makes frame k + 1.
    k = branch_frame(0, 21)
    assert k % 4 == 0 and 4 <= k <= 21 - 1 - 8
    for ep in branches:
        assert np.array_equal(ep.frames[: k + 1], trunk.frames[: k + 1])
        assert np.array_equal(ep.actions["twist"][: k + 1], trunk.actions["twist"][: k + 1])
        assert not np.array_equal(ep.actions["twist"][k + 1], trunk.actions["twist"][k + 1])
        assert not np.array_equal(ep.frames[k + 2 :], trunk.frames[k + 2 :])
    assert not np.array_equal(branches[0].actions["twist"], branches[1].actions["twist"])


def test_datagen_refuses_branches_of_episodes_too_short_to_part(tmp_path, capsys):
    with pytest.raises(SystemExit):
        datagen(["--domains", "mobile", "--episodes", "1", "--frames", "9", "--branches", "1", "--out", str(tmp_path)])
    assert "--branches needs --frames >= 13" in capsys.readouterr().err
    assert not (tmp_path / "mobile").exists()


def _data(recorded, tmp_path, domain: str = "*") -> dict:
    return {
        "train": [str(recorded / f"train/{domain}/seed_*")],
        "val": [str(recorded / f"val/{domain}/seed_*")],
        "action_topics": ACTION_TOPICS,
        "joint_names": JOINTS,
        "cache_dir": str(tmp_path / "cache"),
    }


SHORT = {"steps": 2, "batch_size": 2, "log_every": 1, "eval_every": 2, "save_every": 1, "warmup_steps": 1}


def _config(recorded, tmp_path, name: str, domain: str = "*", **fields) -> TrainConfig:
    fields = {"stage": name, **fields}
    path = tmp_path / f"{name}.yaml"
    data = _data(recorded, tmp_path, domain)
    path.write_text(json.dumps({"out_dir": str(tmp_path / name), "data": data, **SHORT, **fields}))
    return TrainConfig.load(path)


def test_stage_yaml_base_supplies_what_the_file_leaves_out_mappings_merged(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "stage: astra\nout_dir: a\nsteps: 3000\nlr: 0.001\n"
        "model: {extensions: {spatial: true}, history: {slots_4x: 2}}\ndata: {train: [t], val: [v]}\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nout_dir: b\nmodel: {extensions: {local_motion: true}}\n")
    cfg = TrainConfig.load(tmp_path / "child.yaml", {"steps": 5})
    assert (cfg.stage, cfg.out_dir, cfg.steps, cfg.lr) == ("astra", "b", 5, 0.001)
    assert cfg.model == {"extensions": {"spatial": True, "local_motion": True}, "history": {"slots_4x": 2}}
    assert cfg.data.train == ["t"]


@pytest.mark.parametrize("name", ["parting_prob", "field_render_weight", "pair_weight"])
def test_stage_settings_are_one_number_or_one_per_modality(tmp_path, name):
    (tmp_path / "s.yaml").write_text("stage: astra\nout_dir: a\ndata: {train: [t], val: [v]}\n")
    assert TrainConfig.load(tmp_path / "s.yaml").for_modality(name, "twist") == 0.0  # off by default
    assert TrainConfig.load(tmp_path / "s.yaml", {name: 2.5}).for_modality(name, "twist") == 2.5
    per = TrainConfig.load(tmp_path / "s.yaml", {name: {"joints": 10}})
    assert (per.for_modality(name, "joints"), per.for_modality(name, "twist")) == (10.0, 0.0)


@pytest.mark.parametrize(("name", "off"), [("family_weight", 0.0), ("world_weight", 1.0), ("timestep_shift", None)])
def test_removed_settings_load_when_off_and_are_an_error_otherwise(tmp_path, name, off):
    (tmp_path / "s.yaml").write_text("stage: astra\nout_dir: a\ndata: {train: [t], val: [v]}\n")
    assert not hasattr(TrainConfig.load(tmp_path / "s.yaml", {name: off}), name)
    with pytest.raises(ValueError, match=f"{name} was removed from training"):
        TrainConfig.load(tmp_path / "s.yaml", {name: 2.0})


def test_removed_per_modality_settings_are_off_when_every_modality_is(tmp_path):
    (tmp_path / "s.yaml").write_text("stage: astra\nout_dir: a\ndata: {train: [t], val: [v]}\nmotion_weight: 0.0\n")
    TrainConfig.load(tmp_path / "s.yaml", {"warp_weight": {"joints": 0.0}})
    with pytest.raises(ValueError, match=r"warp_weight was removed .* got \{'joints': 10\}"):
        TrainConfig.load(tmp_path / "s.yaml", {"warp_weight": {"joints": 10}})


def test_stage_yaml_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nstage: vae\n")
    with pytest.raises(ValueError, match="'base' chain loops back"):
        TrainConfig.load(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("config/stage_*.yaml")), ids=lambda p: p.name)
def test_shipped_stage_configs_load(path):
    cfg = TrainConfig.load(path)
    assert cfg.steps > 0 and cfg.data.train and cfg.data.image_topic == IMAGE_TOPIC


def _train(cfg: TrainConfig, resume: bool = False) -> Path:
    """The stage `cfg` trained on the bags its `data` names."""
    return train(cfg, *load_episodes(cfg.data), resume=resume)


MODEL_CFG = {"preset": "tiny", "action_labels": {"joints": JOINTS, "twist": [f"t{i}" for i in range(6)]}}


@pytest.fixture(scope="module")
def vae_dir(recorded, tmp_path_factory):
    return _train(_config(recorded, tmp_path_factory.mktemp("vae"), "vae", vae_clip_frames=5))


@pytest.fixture(scope="module")
def backbone_dir(recorded, vae_dir, tmp_path_factory):
    """Stages 1 and 2, trained for two steps each."""
    return _train(
        _config(recorded, tmp_path_factory.mktemp("backbone"), "backbone", init_from=str(vae_dir), model=MODEL_CFG)
    )


def _stage(cfg: TrainConfig):
    return world_model_stage(cfg, *load_episodes(cfg.data), torch.device("cpu"), lambda module: module)


def test_backbone_stage_learns_every_domain(recorded, vae_dir, tmp_path):
    stage = _stage(_config(recorded, tmp_path, "backbone", init_from=str(vae_dir), model=MODEL_CFG))
    metrics = stage.evaluate()
    assert set(metrics) == {"val_flow", "val_flow/camera_pose", "val_flow/joints", "val_flow/twist"}
    assert len({metrics[f"val_flow/{m}"] for m in ("camera_pose", "joints", "twist")}) == 3


def test_three_stages_train_resume_and_keep_the_backbone_frozen(recorded, backbone_dir, tmp_path):
    before = AstraWorldModel.from_pretrained(backbone_dir)

    astra_cfg = _config(recorded, tmp_path, "astra", init_from=str(backbone_dir))
    _train(astra_cfg)
    astra_cfg.steps = 3
    final = _train(astra_cfg, resume=True)
    assert latest_checkpoint(tmp_path / "astra").name == "step_0000003"

    astra_cfg.steps, astra_cfg.stop_at = 10, 4  # stop early on a longer schedule, as run 8's chain does
    _train(astra_cfg, resume=True)
    assert latest_checkpoint(tmp_path / "astra").name == "step_0000004"
    assert lr_at(3, astra_cfg) > lr_at(3, TrainConfig(**{**vars(astra_cfg), "steps": 4}))

    after = AstraWorldModel.from_pretrained(final)
    assert after.seed_frame is not None and after.seed_frame.shape == (32, 32, 3)
    frozen = [n for n, p in after.named_parameters() if not p.requires_grad]
    assert any(".attn2." in n for n in frozen) and any(n.startswith("vae.") for n in frozen)
    ref = dict(before.named_parameters())
    for name in frozen:
        assert torch.equal(dict(after.named_parameters())[name], ref[name]), name
    assert not torch.equal(after.adapters[0].weight, before.adapters[0].weight)  # stage 3 trained the adapters
    saved = load_file(str(tmp_path / "astra/checkpoints/step_0000003/trainable.safetensors"))
    assert set(saved) == {n for n, p in after.named_parameters() if p.requires_grad}


def test_stage_three_warm_starts_from_a_trained_run_and_leaves_new_heads_fresh(
    recorded, vae_dir, backbone_dir, tmp_path
):
    first = _train(_config(recorded, tmp_path, "astra", init_from=str(backbone_dir)))
    trained = dict(AstraWorldModel.from_pretrained(first).named_parameters())
    local = {"extensions": {"local_motion": True}}
    stage = _stage(_config(recorded, tmp_path, "astra_local", stage="astra", init_from=str(backbone_dir), model=local))
    params = {n: p for n, p in stage.module.named_parameters() if p.requires_grad}
    for source in (first, tmp_path / "astra/checkpoints/step_0000002"):
        fresh = warm_start(stage.module, source)
        assert fresh and all(n.startswith("extensions.local_motion.") for n in fresh)
        for name, param in params.items():
            if name not in fresh:
                assert torch.equal(param, trained[name]), name
        assert not stage.module.extensions.local_motion.net[-1].weight.any()  # the new head still moves nothing
    with pytest.raises(ValueError, match="no trainable parameter of this stage has a tensor of its name and shape"):
        warm_start(stage.module, Path(vae_dir).parent / "checkpoints/step_0000002")


def test_a_separate_world_trained_alone_leaves_the_shared_model_bit_exact(recorded, backbone_dir, tmp_path):
    base_dir = _train(_config(recorded, tmp_path, "astra", init_from=str(backbone_dir)))
    arm_cfg = _config(
        recorded, tmp_path, "arm", domain="arm", stage="astra", init_from=str(base_dir), warm_start=str(base_dir),
        model={"worlds": {"arm": {"modalities": ["joints"], "own_weights": True}}}, lr=1e-2,
    )  # fmt: skip
    base, after = AstraWorldModel.from_pretrained(base_dir), AstraWorldModel.from_pretrained(_train(arm_cfg))
    trained = dict(after.named_parameters())
    for name, param in base.named_parameters():
        assert torch.equal(trained[name], param), name
    copies = after.shared_names()
    assert any(not torch.equal(trained[world], trained[shared]) for world, shared in copies.items())
    # The worlds this stage had no data for keep their statistics and the demo's start frame.
    assert after.config.action_stats == base.config.action_stats
    assert np.array_equal(after.seed_frame, base.seed_frame)


def test_lr_scale_groups_parameters_by_the_first_key_their_name_contains(tmp_path):
    params = {n: torch.nn.Parameter(torch.zeros(1)) for n in ("pose_warp.a", "moae.b", "moae.pose_warp.c", "d")}
    groups = param_groups(params, {"moae.": 0.0, "pose_warp.": 10.0})
    by_scale = {g["lr_scale"]: [n for n, p in params.items() if any(p is q for q in g["params"])] for g in groups}
    assert by_scale == {10.0: ["pose_warp.a"], 0.0: ["moae.b", "moae.pose_warp.c"], 1.0: ["d"]}
    with pytest.raises(ValueError, match=r"lr_scale keys \['adaptors\.'\] name no trainable parameter"):
        param_groups(params, {"adaptors.": 0.0})
    (tmp_path / "s.yaml").write_text("stage: astra\nout_dir: a\ndata: {train: [t], val: [v]}\n")
    with pytest.raises(ValueError, match="lr_scale multipliers must be >= 0"):
        TrainConfig.load(tmp_path / "s.yaml", {"lr_scale": {"moae.": -1}})


def test_lr_scale_zero_holds_its_weights_bit_exact_while_the_rest_train(recorded, backbone_dir, tmp_path):
    base_dir = _train(_config(recorded, tmp_path, "astra", init_from=str(backbone_dir)))
    held = _config(
        recorded, tmp_path, "held", stage="astra", init_from=str(base_dir), warm_start=str(base_dir), lr=1e-2,
        lr_scale={"moae.": 0.0},
    )  # fmt: skip
    base, after = AstraWorldModel.from_pretrained(base_dir), AstraWorldModel.from_pretrained(_train(held))
    trained = dict(after.named_parameters())
    moae = [n for n, _ in base.named_parameters() if n.startswith("moae.")]
    assert moae and all(torch.equal(trained[n], dict(base.named_parameters())[n]) for n in moae)
    assert not torch.equal(after.adapters[0].weight, base.adapters[0].weight)
    held.steps = 3  # the groups come back with the optimizer's state
    _train(held, resume=True)
    assert latest_checkpoint(tmp_path / "held").name == "step_0000003"


def test_action_gap_is_exactly_zero_until_the_action_path_trains(recorded, backbone_dir, tmp_path):
    stage = _stage(_config(recorded, tmp_path, "astra", init_from=str(backbone_dir)))
    before = stage.evaluate()
    gaps = {k for k in before if k.startswith("action_gap/")}
    assert gaps == {"action_gap/camera_pose", "action_gap/joints", "action_gap/twist"}
    # Experts start at zero, so swapping commands between samples (the val set has two episodes per
    # domain to swap between) cannot change a fresh model's loss.
    assert all(before[k] == 0.0 for k in gaps)
    assert before["val_flow"] == pytest.approx(
        np.mean([before[f"val_flow/{m}"] for m in ("camera_pose", "joints", "twist")])
    )
    with torch.no_grad():
        for expert in stage.module.moae.experts[0]:
            expert.weight.normal_()
    after = stage.evaluate()
    assert all(after[k] != 0.0 for k in gaps)
    assert after["val_flow/twist"] != before["val_flow/twist"]


def test_stage_three_scores_and_trains_at_validation_partings(recorded, backbone_dir, tmp_path):
    args = ["--domains", "mobile", "--episodes", "1", "--frames", "21", "--image-size", "32", "--branches", "2"]
    datagen([*args, "--seed", "900", "--out", str(tmp_path / "branched")])
    cfg = _config(recorded, tmp_path, "astra", init_from=str(backbone_dir), parting_prob=1.0)
    cfg.data.train = cfg.data.val = [str(tmp_path / "branched/*/seed_*")]
    stage = _stage(cfg)
    # Stage 3 standardises the commands with statistics of its own training data.
    expected = action_stats(load_episodes(cfg.data)[0], stage.module.config)
    assert stage.module.config.action_stats == expected and list(expected) == ["twist"]
    before = stage.evaluate()
    assert before["parting_gap/twist"] == 0.0 and "parting_gap/joints" not in before  # no arm branches
    with torch.no_grad():
        for expert in stage.module.moae.experts[0]:
            expert.weight.normal_()
    assert stage.evaluate()["parting_gap/twist"] != 0.0

    def pair_term() -> float:
        # Only a family batch has a pair term: > 0 where its futures differ.
        return stage.loss(np.random.default_rng(0), torch.Generator().manual_seed(0))["pair"].item()

    assert pair_term() > 0  # every batch starts at the parting, where the futures differ
    cfg.parting_prob = {"twist": 1.0}
    assert pair_term() > 0
    for off in (0.0, {"joints": 1.0}):
        cfg.parting_prob = off
        assert pair_term() == 0.0


def test_a_recipe_runs_its_steps_in_order_resumed_and_writes_their_final_config(
    recorded, backbone_dir, tmp_path, capsys
):
    stage = {"stage": "astra", "out_dir": "x", "data": _data(recorded, tmp_path), **SHORT}
    (tmp_path / "stage.yaml").write_text(json.dumps(stage))
    chain = [
        {"config": "stage.yaml", "out_dir": "short", "init_from": str(backbone_dir)},
        {"config": "stage.yaml", "out_dir": "long", "init_from": str(backbone_dir), "resume_from": "short", "steps": 3,
         "final_config": {"sampler": {"guidance_scale": 1.25}}},
    ]  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps({"chain": chain}))
    run = tmp_path / "run"
    final = run_recipe(load_recipe(tmp_path / "recipe.yaml", run), load_episodes)
    assert final == run / "long/final"
    # The long step continued the short one on its own schedule: its two checkpoints, then a third step.
    assert f"resumed from {run / 'long/checkpoints/step_0000002'} at step 2" in capsys.readouterr().out
    assert [p.name for p in sorted((run / "long/checkpoints").iterdir())] == [f"step_000000{n}" for n in (1, 2, 3)]
    step_two = "checkpoints/step_0000002/trainable.safetensors"
    source, copy = (load_file(str(run / folder / step_two)) for folder in ("short", "long"))
    assert source.keys() == copy.keys() and all(torch.equal(source[n], copy[n]) for n in source)
    assert read_config(final).sampler.guidance_scale == 1.25
    assert read_config(run / "short/final").sampler == read_config(backbone_dir).sampler


def test_vae_stage_fine_tunes_from_init_on_longer_clips(recorded, vae_dir, tmp_path):
    tuned = _train(
        _config(recorded, tmp_path, "vae_long", stage="vae", init_from=str(vae_dir), vae_clip_frames=9, lr=0.0)
    )
    a, b = AutoencoderKLWan.from_pretrained(vae_dir), AutoencoderKLWan.from_pretrained(tuned)
    # lr 0: the fine-tune starts from (and keeps) the first run's weights, not a fresh initialisation.
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_decoder_stage_tunes_only_the_vae_decoder_of_a_world_model_and_resumes(recorded, backbone_dir, tmp_path):
    cfg = _config(recorded, tmp_path, "decoder", init_from=str(backbone_dir), vae_clip_frames=9, lr=1e-2)
    _train(cfg)
    cfg.steps = 3
    final = _train(cfg, resume=True)
    before, after = AstraWorldModel.from_pretrained(backbone_dir), AstraWorldModel.from_pretrained(final)
    decoder = {n for n in before.state_dict() if n.startswith(("vae.decoder.", "vae.post_quant_conv."))}
    saved = load_file(str(tmp_path / "decoder/checkpoints/step_0000003/trainable.safetensors"))
    assert set(saved) == decoder
    ref = before.state_dict()
    for name, value in after.state_dict().items():
        # The encoder (so every latent) and the transformer are bit-exact; the decoder learned.
        assert torch.equal(value, ref[name]) == (name not in decoder), name
    assert after.config == before.config  # latent statistics included


RENDERING = {"extensions": {"action_field": {"worlds": ["shared"], "render": True}}}


def test_stage_three_reports_and_trains_the_field_render(recorded, backbone_dir, tmp_path):
    cfg = _config(recorded, tmp_path, "astra", init_from=str(backbone_dir), model=RENDERING, field_render_weight=0.5)
    stage = _stage(cfg)
    metrics = stage.evaluate()
    renders = {k: v for k, v in metrics.items() if k.startswith("val_render/")}
    assert set(renders) == {"val_render/camera_pose", "val_render/joints", "val_render/twist"}
    assert all(v > 0 for v in renders.values())
    terms = stage.loss(np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert terms["render"] > 0
    (tmp_path / "plain").mkdir()
    plain = _stage(_config(recorded, tmp_path / "plain", "astra", init_from=str(backbone_dir)))
    assert not any(k.startswith("val_render/") for k in plain.evaluate())


def test_renderer_stage_fits_the_renderers_alone(recorded, backbone_dir, tmp_path):
    cfg = _config(recorded, tmp_path, "renderer", init_from=str(backbone_dir), model=RENDERING)
    stage = renderer_stage(cfg, *load_episodes(cfg.data), torch.device("cpu"), lambda module: module)
    trainable = {n: p for n, p in stage.module.named_parameters() if p.requires_grad}
    assert trainable and all(any(part in n for part in RENDERER_PARTS) for n in trainable)
    metrics = stage.evaluate()
    worlds = ("camera_pose", "joints", "twist")
    assert set(metrics) == {f"{k}/{m}" for k in ("val_render", "render_gap") for m in worlds}
    assert all(metrics[f"val_render/{m}"] > 0 for m in worlds)
    terms = stage.loss(np.random.default_rng(0), torch.Generator().manual_seed(0))
    terms["total"].backward()
    assert all(p.grad.abs().sum() > 0 for p in trainable.values())
    # Trained end to end, nothing but the renderer moves.
    before = AstraWorldModel.from_pretrained(backbone_dir).state_dict()
    after = AstraWorldModel.from_pretrained(_train(cfg)).state_dict()
    assert all(torch.equal(after[n], t) for n, t in before.items())


def test_renderer_stage_needs_a_renderer(recorded, backbone_dir, tmp_path):
    cfg = _config(recorded, tmp_path, "renderer", init_from=str(backbone_dir))
    with pytest.raises(ValueError, match=r"stage 'renderer' fits the action field's renderer"):
        renderer_stage(cfg, *load_episodes(cfg.data), torch.device("cpu"), lambda module: module)
