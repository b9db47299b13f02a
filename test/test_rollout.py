"""Autoregressive rollouts: shapes, determinism, snapshot/fork, bounded memory, caches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomise_action_path, tiny_config
from diffusers import AutoencoderKLWan

from astra_model import AstraWorldModel, History
from astra_model.anchoring import Anchor
from astra_model.vae import VAEStream

ACT = {"twist": np.linspace(-1, 1, 8 * 6, dtype=np.float32).reshape(8, 6)}


def _fixed_camera(tolerance: float = 24.0, modalities: tuple[str, ...] = ("twist",)) -> dict[str, dict]:
    """`AstraConfig.worlds` with one world, on the shared weights, that a fixed camera sees."""
    return {"robot": {"modalities": list(modalities), "fixed_camera": True, "anchor_tolerance": tolerance}}


def _model(attention: str = "full", **overrides) -> AstraWorldModel:
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(attention=attention, **overrides)).eval()
    randomise_action_path(model)
    return model


def test_step_returns_uint8_frames_of_the_seed_size(seed_frames):
    session = _model().start(seed_frames, seed=3)
    frames = session.step(ACT)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert session.step_count == 1 and session.frames_per_step == 8


def test_rollouts_are_deterministic_for_a_seed(seed_frames):
    model = _model()
    a = [model.start(seed_frames, seed=7).step(ACT) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    other = model.start(seed_frames, seed=8).step(ACT)
    assert not np.array_equal(a[0], other)


def test_snapshot_restore_replays_exactly(seed_frames):
    session = _model().start(seed_frames, seed=1)
    session.step(ACT)
    snap = session.snapshot()
    first = session.step(ACT)
    session.step(ACT)
    session.restore(snap)
    assert np.array_equal(session.step(ACT), first)


@pytest.mark.parametrize("worlds", [{}, _fixed_camera()], ids=["moving", "fixed-camera"])
def test_fork_gives_counterfactual_batch_from_one_state(seed_frames, worlds):
    session = _model(worlds=worlds).start(seed_frames, seed=1)
    session.step(ACT)
    snap = session.snapshot()
    reference = session.step(ACT)
    session.restore(snap)
    branches = session.fork(3)
    batch = np.stack([ACT["twist"], -ACT["twist"], ACT["twist"]])
    out = branches.step({"twist": batch})
    assert out.shape == (3, 8, 32, 32, 3)
    # Same actions from the same state reproduce the unforked rollout (shared noise) ...
    assert np.abs(out[0].astype(int) - reference).max() <= 1
    assert np.abs(out[2].astype(int) - out[0]).max() <= 1
    # ... and other actions give another future.
    assert np.abs(out[1].astype(int) - out[0]).mean() > 0.05
    # The live session is untouched by its fork.
    assert np.array_equal(session.step(ACT), reference)


def test_anchor_shows_the_true_frame_where_the_prediction_matches_its_reconstruction():
    gen = torch.Generator().manual_seed(0)
    frame, recon = (torch.rand(1, 3, 1, 4, 4, generator=gen) * 2 - 1 for _ in range(2))
    anchor = Anchor(frame, recon)
    video = recon.repeat(1, 1, 3, 1, 1)
    video[:, :, 1, 0, 0] += 1.0  # one pixel of one frame moved by 127.5 grey levels
    out = anchor.apply(video, tolerance=8.0)
    assert out.shape == video.shape
    still = torch.ones(4, 4, dtype=torch.bool)
    still[0, 0] = False
    assert torch.allclose(out[:, :, 0], frame[:, :, 0], atol=1e-6)
    assert torch.allclose(out[:, :, 1, still], frame[:, :, 0, still], atol=1e-6)
    assert torch.equal(out[:, :, 1, 0, 0], video[:, :, 1, 0, 0].clamp(-1, 1))  # moved: the prediction
    assert out.abs().max() <= 1.0
    assert torch.equal(anchor.repeat(3).frame, frame.repeat(3, 1, 1, 1, 1))


def test_fixed_camera_chunks_add_the_seed_frames_detail_and_leave_the_model_state_alone(seed_frames):
    plain, anchored = _model(), _model(worlds=_fixed_camera(tolerance=1e9))  # keep everywhere
    sessions = [m.start(seed_frames, seed=2) for m in (plain, anchored)]
    frames = [s.step(ACT).astype(int) for s in sessions]
    assert torch.equal(sessions[0].state.history.latents, sessions[1].state.history.latents)
    anchor = sessions[1].state.anchor
    detail = ((anchor.frame - anchor.reconstruction)[0, :, 0] * 127.5).permute(1, 2, 0).numpy()
    inside = (frames[1] > 0) & (frames[1] < 255)  # not clipped
    assert np.abs((frames[1] - frames[0] - detail)[inside]).max() <= 1.01  # rounding of both
    assert np.abs(detail).mean() > 1  # the tiny VAE's reconstruction differs from the seed frame
    # Action-free chunks may come from any world, so they are never anchored.
    assert np.array_equal(*(s.step(None) for s in sessions))


def test_config_refuses_anchoring_unknown_modalities_or_a_tolerance_of_zero():
    with pytest.raises(ValueError, match=r"worlds\['robot'\] must name modalities \(unknown: \['gripper'\]\)"):
        tiny_config(worlds=_fixed_camera(modalities=("gripper",)))
    with pytest.raises(ValueError, match=r"anchor_tolerance must be > 0 \(got 0.0\)"):
        tiny_config(worlds=_fixed_camera(tolerance=0.0))


def test_memory_is_bounded_over_long_rollouts(seed_frames):
    model = _model()
    session = model.start(seed_frames, seed=0)
    capacity = model.config.history.capacity
    for _ in range(6):
        session.step(ACT, steps=2)
        assert session.history_length <= capacity
    idx = session.state.history.indices.tolist()
    assert idx[0] == 0 and idx[-1] == 2 + 6 * 2 - 1  # first frame kept, latest frame is the newest


def test_session_history_keeps_the_commands_of_each_chunk(seed_frames):
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(history={"with_actions": True})).eval()
    randomise_action_path(model)
    session = model.start(seed_frames, seed=1)
    session.step(ACT)
    snap = session.snapshot()
    session.step(None)  # action-free: its frames' commands are unknown
    twist = session.state.history.actions["twist"]
    grouped = torch.from_numpy(ACT["twist"]).reshape(2, 24)
    assert twist.shape == (1, 6, 24)  # 2 start latents (commands unknown), then 2 + 2 chunk latents
    assert torch.equal(twist[0, :2], torch.zeros(2, 24)) and torch.equal(twist[0, 2:4], grouped)
    assert torch.equal(twist[0, 4:], torch.zeros(2, 24))
    session.restore(snap)  # the snapshot kept its own copy
    assert torch.equal(session.state.history.actions["twist"], twist[:, :4])


def test_start_gives_the_seed_frames_their_commands_as_training_clips_do(seed_frames):
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(history={"with_actions": True})).eval()
    frames = np.concatenate([seed_frames, seed_frames[:2]])  # 7 frames: the VAE keeps the last 5
    commands = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    session = model.start(frames, seed=1, commands={"twist": commands})
    twist = session.state.history.actions["twist"]
    # Latent frame 0 (video frame 2) has no command the model ever uses; latent frame 1 is video
    # frames 3-6, made by rows 3-6.
    assert torch.equal(twist[0, 0], torch.zeros(24))
    assert torch.equal(twist[0, 1], torch.from_numpy(commands[3:7].reshape(24)))
    randomise_action_path(model)
    plain = model.start(frames, seed=1).step(ACT)
    assert not np.array_equal(model.start(frames, seed=1, commands={"twist": commands}).step(ACT), plain)


def test_bad_seed_commands_are_refused_with_reasons(seed_frames):
    model = _model()
    with pytest.raises(ValueError, match=r"commands\['twist'\] must be \[5, 6\]"):
        model.start(seed_frames, commands={"twist": np.zeros((4, 6), np.float32)})
    bad = np.zeros((5, 6), np.float32)
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"commands\['twist'\] contains NaN or infinite"):
        model.start(seed_frames, commands={"twist": bad})
    with pytest.raises(ValueError, match="unknown command modality 'wheels'"):
        model.start(seed_frames, commands={"wheels": np.zeros((5, 2), np.float32)})


@pytest.mark.parametrize("use_guidance", [0.0, 2.0])
def test_block_causal_kv_cache_matches_uncached(seed_frames, use_guidance):
    model = _model("block_causal")
    session = model.start(seed_frames, seed=2)
    session.step(ACT)
    snap = session.snapshot()
    cached = session.step(ACT, guidance_scale=use_guidance, use_kv_cache=True)
    session.restore(snap)
    uncached = session.step(ACT, guidance_scale=use_guidance, use_kv_cache=False)
    assert np.array_equal(cached, uncached)


def test_kv_cache_velocity_matches_uncached():
    from astra_model import KVCache

    model = _model("block_causal")
    hist = History.from_latents(torch.randn(1, 16, 6, 8, 8))
    acts = {"twist": torch.randn(1, 8, 6)}
    cache = KVCache()
    with torch.no_grad():
        for t in (900.0, 400.0, 10.0):
            x, ts = torch.randn(1, 16, 2, 8, 8), torch.tensor([t])
            cached = model(x, ts, acts, hist, kv_cache=cache).velocity
            plain = model(x, ts, acts, hist).velocity
            assert torch.allclose(cached, plain, atol=1e-6, rtol=1e-5)
    assert cache.layers is not None and len(cache.layers) == len(model.backbone.blocks)


def test_full_attention_refuses_a_kv_cache():
    from astra_model import KVCache

    model = _model("full")
    with pytest.raises(ValueError, match="block_causal"):
        model(
            torch.randn(1, 16, 2, 8, 8),
            torch.tensor([1.0]),
            None,
            torch.randn(1, 16, 1, 8, 8),
            kv_cache=KVCache(),
        )


TEMPORAL = pytest.mark.parametrize(
    "temperal_downsample, ratio", [([False, True, True], 4), ([False, False, True], 2), ([False, False, False], 1)]
)


def _vae(temperal_downsample: list[bool]) -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**{**tiny_config().vae, "temperal_downsample": temperal_downsample}).eval()


@TEMPORAL
def test_streaming_decode_matches_one_shot_decode(temperal_downsample, ratio):
    vae = _vae(temperal_downsample)
    latents = torch.randn(1, 16, 7, 4, 4)
    with torch.no_grad():
        one_shot = vae.decode(latents).sample
        stream = VAEStream(vae)
        pieces = [stream.decode(latents[:, :, a:b]) for a, b in ((0, 1), (1, 3), (3, 4), (4, 7))]
    streamed = torch.cat(pieces, dim=2)
    assert stream.ratio == ratio
    assert streamed.shape == one_shot.shape == (1, 3, 1 + 6 * ratio, 32, 32)
    assert torch.equal(streamed, one_shot)


@TEMPORAL
def test_streaming_encode_matches_one_shot_encode(temperal_downsample, ratio):
    vae = _vae(temperal_downsample)
    video = torch.rand(1, 3, 13, 32, 32) * 2 - 1
    with torch.no_grad():
        one_shot = vae.encode(video).latent_dist.mode()
        stream = VAEStream(vae)
        streamed = torch.cat([stream.encode(video[:, :, :5]), stream.encode(video[:, :, 5:])], dim=2)
    assert one_shot.shape[2] == 1 + 12 // ratio
    assert torch.equal(streamed, one_shot)


def test_streaming_encode_refuses_frame_counts_off_the_latent_grid():
    stream = VAEStream(_vae([False, False, True]))  # 2 video frames per latent frame
    with pytest.raises(ValueError, match=r"got 4 frames, needs 1 \+ 2k frames on the first call"):
        stream.encode(torch.zeros(1, 3, 4, 32, 32))
    assert stream.enc_cache is None  # the refused call started nothing
    stream.encode(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="got 3 frames, needs 2k frames after the first call"):
        stream.encode(torch.zeros(1, 3, 3, 32, 32))


def test_a_model_whose_vae_keeps_every_frame_rolls_out_chunks_of_that_many_frames():
    config = tiny_config()
    config = config.replace(vae={**config.vae, "temperal_downsample": [False, False, False]})
    assert config.frames_per_chunk == config.chunk_latent_frames
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    session = AstraWorldModel(config).eval().start(frames, seed=0)
    assert session.history_length == 6  # one latent frame per seed frame, none dropped
    actions = {name: np.zeros((config.frames_per_chunk, dim), np.float32) for name, dim in config.modalities.items()}
    chunk = session.step(actions, steps=1)
    assert chunk.shape == (config.frames_per_chunk, 32, 32, 3) and chunk.dtype == np.uint8
    assert session.history_length == 6 + config.chunk_latent_frames


def test_bad_actions_are_refused_with_reasons(seed_frames):
    session = _model().start(seed_frames)
    nan = ACT["twist"].copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"actions\['twist'\] contains NaN"):
        session.step({"twist": nan})
    with pytest.raises(ValueError, match=r"must be \[batch, 8, 6\]"):
        session.step({"twist": np.zeros((8, 5), np.float32)})
    with pytest.raises(ValueError, match="unknown action modality 'wheels'"):
        session.step({"wheels": np.zeros((8, 2), np.float32)})
    assert session.step_count == 0  # nothing was consumed by the refused calls
    session.step(ACT)


def test_bad_seed_frames_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="uint8"):
        model.start(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        model.start(np.zeros((1, 30, 32, 3), np.uint8))


def test_rollout_cli_writes_video_and_strip_from_the_models_seed_frame(tmp_path, seed_frames):
    import imageio.v3 as iio

    from astra_ros.rollout_cli import main

    model = _model()
    model.seed_frame = seed_frames[0]
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "out" / "rollout.mp4"
    main(["--checkpoint", str(tmp_path / "model"), "--chunks", "2", "--out", str(out)])
    video = iio.imread(out)
    assert video.shape == (1 + 2 * 8, 32, 32, 3)
    strip = iio.imread(out.with_suffix(".png"))
    assert strip.shape[0] == 32 and np.array_equal(strip[:, :32], seed_frames[0])
