"""The demo worlds' held-out evaluation (`python -m astra_ros.demo_eval`) on a tiny untrained model."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_config

from astra_model import AstraWorldModel
from astra_model.vae import frames_to_video, video_to_frames
from astra_ros.demo_eval import (
    ActionPair,
    Sampling,
    _pooled_psnr,
    _seed_context,
    evaluate,
    following_interval,
    main,
    markdown,
    reconstruction,
)
from astra_ros.envs import DOMAINS, make_env

MODALITIES = {"twist": 6, "joints": 4, "camera_pose": 7}


def test_pooled_psnr_is_psnr_of_the_mean_squared_error():
    # One frame left unchanged (MSE 0) must not dominate: 10 log10(255^2 / mean(0, 130.05)) = 30 dB.
    assert _pooled_psnr(np.array([0.0, 130.05]).mean(keepdims=True)) == [30.0]
    assert _pooled_psnr(np.zeros(1)) == [100.0]  # identical frames: the per-frame PSNR's cap


def test_report_scores_every_domain_horizon_and_the_copy_baseline():
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(modalities=MODALITIES, chunk_latent_frames=1)).eval()
    sampling = Sampling(1, 0.0)
    report, examples = evaluate(model, episodes=2, chunks=2, pairs=1, size=32, first_seed=70_000, sampling=sampling)
    assert list(report) == list(examples) == list(DOMAINS)
    for domain, pair in examples.items():
        assert pair.truths.shape == pair.preds.shape == (2, 4, 32, 32, 3)
        assert report[domain]["action_following"] == float(pair.followed())
        assert report[domain]["pairs_followed"] == int(pair.followed()) and report[domain]["pairs"] == 1
        predicted, true = pair.spreads()
        assert report[domain]["pair_prediction_mse"] == round(predicted, 4)
        assert report[domain]["pair_truth_mse"] == round(true, 4)
        assert report[domain]["pair_response"] == round(predicted / max(true, 1e-12), 4)
        # Pairs are scored again from the seed frames alone, as the node starts.
        without = report[domain]["without_seed_commands"]
        assert (
            without["pairs"] == 1 and without["pairs_followed"] in (0, 1) and without["action_following_ci95"][0] >= 0
        )
    for r in report.values():
        for key in ("model", "copy", "vae"):
            assert len(r[f"{key}_psnr"]) == len(r[f"{key}_ssim"]) == len(r[f"{key}_frame_psnr"]) == 2
            np.testing.assert_allclose(r[f"{key}_psnr"], _pooled_psnr(np.array(r[f"{key}_mse"])), atol=1e-3)
        # Mean of per-frame PSNRs >= PSNR of the mean error (Jensen), equal only for equal errors.
        assert all(f >= p - 1e-3 for f, p in zip(r["copy_frame_psnr"], r["copy_psnr"], strict=True))
        assert r["beats_copy_psnr_at_horizon"] == [m > c for m, c in zip(r["model_psnr"], r["copy_psnr"], strict=True)]
        assert r["action_following"] in (0.0, 1.0)
    assert "| mobile | 2 |" in markdown(report)
    assert "| mobile | no seed commands |" in markdown(report)


def test_vae_row_is_the_one_shot_reconstruction_of_the_true_frames():
    torch.manual_seed(0)
    model = AstraWorldModel(tiny_config(modalities=MODALITIES)).eval()
    frames = np.random.default_rng(0).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    video = frames_to_video(torch.from_numpy(frames)[None])
    with torch.no_grad():
        whole = video_to_frames(model.vae.decode(model.vae.encode(video).latent_dist.mode()).sample)[0].numpy()
    recon = reconstruction(model, frames[:5], frames[5:])
    assert recon.shape == (8, 32, 32, 3) and recon.dtype == np.uint8
    assert np.abs(recon.astype(int) - whole[5:]).max() <= 1  # float rounding of the latent normalisation
    # A fixed-camera world shows it as its rollouts do: with the last seed frame's detail where still.
    model.config = model.config.replace(
        worlds={"mobile": {"modalities": ["twist"], "fixed_camera": True, "anchor_tolerance": 1e9}}
    )
    anchored = reconstruction(model, frames[:5], frames[5:], "twist").astype(int)
    detail = frames[4].astype(int) - whole[4]
    inside = (anchored > 0) & (anchored < 255)
    assert np.abs((anchored - whole[5:] - detail)[inside]).max() <= 2  # rounding of three uint8 frames
    assert np.array_equal(reconstruction(model, frames[:5], frames[5:], "joints"), recon)


def test_seed_context_gives_the_commands_that_made_the_seed_frames():
    with make_env("arm", seed=3, image_size=32) as env:
        frames, commands = _seed_context(env, np.random.default_rng(3))
    with make_env("arm", seed=3, image_size=32) as env:
        replay = [env.reset(), *(env.step(c) for c in commands[1:])]
    assert commands.shape == (5, 4) and np.array_equal(commands[0], commands[1])  # row 0 made no frame
    assert np.array_equal(np.stack(replay), frames)


def test_a_pair_is_followed_only_when_each_prediction_is_closer_to_its_own_truth():
    truths = np.stack([np.zeros((2, 4, 4, 3)), np.full((2, 4, 4, 3), 100)]).astype(np.uint8)
    assert ActionPair(truths, truths + 10).followed()
    assert not ActionPair(truths, truths[::-1]).followed()  # swapped: each is its other's truth
    assert not ActionPair(truths, np.full_like(truths, 50)).followed()  # the same prediction for both


def test_pair_spreads_are_the_mse_between_the_predictions_and_between_the_truths():
    truths = np.stack([np.zeros((2, 4, 4, 3)), np.full((2, 4, 4, 3), 100)]).astype(np.uint8)
    assert ActionPair(truths, truths + 10).spreads() == (10000.0, 10000.0)
    assert ActionPair(truths, np.stack([truths[0] + 20, truths[0] + 40])).spreads() == (400.0, 10000.0)
    assert ActionPair(truths, np.full_like(truths, 50)).spreads() == (0.0, 10000.0)  # commands ignored


# The smallest CLI run: one episode of one chunk, one pair, 32x32 frames, one Euler step.
CLI_SIZES = ["--episodes", "1", "--chunks", "1", "--pairs", "1", "--image-size", "32", "--steps", "1"]


@pytest.fixture
def cli_paths(tmp_path) -> list[str]:
    """`--checkpoint`/`--out` arguments for a saved tiny untrained model and an output folder under tmp_path."""
    torch.manual_seed(0)
    AstraWorldModel(tiny_config(modalities=MODALITIES, chunk_latent_frames=1)).eval().save_pretrained(tmp_path / "m")
    return ["--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path / "eval")]


def test_cli_writes_report_and_action_pair_figure(tmp_path, cli_paths):
    main([*cli_paths, *CLI_SIZES, "--first-seed", "70000"])
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {"demo_eval.json", "demo_eval.md", "action_pairs.png"}
    assert iio.imread(tmp_path / "eval" / "action_pairs.png").shape[1] == 800  # 8 inches at 100 dpi


def test_cli_evaluates_only_the_domains_asked_for(tmp_path, cli_paths):
    main([*cli_paths, *CLI_SIZES, "--domains", "arm"])
    report = json.loads((tmp_path / "eval" / "demo_eval.json").read_text())
    assert list(report) == ["arm"]
    assert "| mobile |" not in (tmp_path / "eval" / "demo_eval.md").read_text()


def test_following_interval_is_the_wilson_score_interval():
    z = 1.959963984540054  # the normal quantile of 0.975
    for k, n in ((15, 20), (0, 20), (20, 20), (28, 30)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        np.testing.assert_allclose(following_interval(k, n), [centre - half, centre + half], atol=1e-4)
    low, high = following_interval(15, 20)
    assert (round(low, 2), round(high, 2)) == (0.53, 0.89)
