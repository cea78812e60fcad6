"""ExpNet and PoseVAE on synthetic weights: shapes, chunking rules, seeds, reference coefficients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker.coeffs.expnet import ExpNet
from sadtalker.coeffs.generate import draw_latents, generate_coefficients, smooth_pose, tile_rows
from sadtalker.coeffs.posevae import Audio2Pose
from sadtalker.networks import synthetic_network_state
from sadtalker.weights.loading import load_strict


@pytest.fixture(scope="module")
def networks():
    expnet = load_strict(ExpNet(), synthetic_network_state(ExpNet(), "audio2exp.", 3)).eval()
    posevae = Audio2Pose()
    load_strict(posevae, synthetic_network_state(posevae, "audio2pose.", 3)).eval()
    return expnet, posevae


def run(networks, frames, seed=0, **kwargs):
    expnet, posevae = networks
    rng = np.random.default_rng(frames)
    mels = rng.uniform(-4, 4, size=(frames, 80, 16)).astype(np.float32)
    source = rng.normal(size=73).astype(np.float32)
    blink = np.zeros((frames, 1), np.float32)
    z = draw_latents(posevae, frames, seed)
    return generate_coefficients(expnet, posevae, mels, source, blink, z, **kwargs), source


@pytest.mark.parametrize("frames, draws", [(1, 0), (2, 1), (3, 1), (32, 1), (33, 1), (34, 2), (70, 3)])
def test_latent_draws_follow_the_chunking_rule(networks, frames, draws):
    assert networks[1].num_draws(frames) == draws
    result, source = run(networks, frames)
    assert result.coefficients.shape == (frames, 70)
    assert np.isfinite(result.coefficients).all()
    # frame 0 of the raw pose is the source pose (zero motion)
    np.testing.assert_allclose(result.pose_raw[0], source[64:70], atol=1e-6)


def test_same_seed_same_output_other_seed_other_pose(networks):
    a, _ = run(networks, 40, seed=1)
    b, _ = run(networks, 40, seed=1)
    c, _ = run(networks, 40, seed=2)
    np.testing.assert_array_equal(a.coefficients, b.coefficients)
    assert not np.allclose(a.coefficients[:, 64:], c.coefficients[:, 64:])
    np.testing.assert_array_equal(a.coefficients[:, :64], c.coefficients[:, :64])  # expression has no noise


def test_pose_style_changes_pose(networks):
    a, _ = run(networks, 20, pose_style=0)
    b, _ = run(networks, 20, pose_style=45)
    assert not np.allclose(a.pose_raw, b.pose_raw)
    with pytest.raises(ValueError, match="pose_style"):
        run(networks, 20, pose_style=46)


def test_wrong_number_of_latents_is_refused(networks):
    expnet, posevae = networks
    with pytest.raises(ValueError, match="latent draws"):
        generate_coefficients(
            expnet, posevae, np.zeros((40, 80, 16), np.float32), np.zeros(70, np.float32),
            np.zeros((40, 1), np.float32), np.zeros((1, 64), np.float32),
        )  # fmt: skip


def test_reference_eyeblink_replaces_beta0_and_zeroes_blink(networks):
    ref_video = np.random.default_rng(5).normal(size=(7, 70)).astype(np.float32)
    plain, _ = run(networks, 12)
    with_ref, _ = run(networks, 12, ref_eyeblink=ref_video)
    assert not with_ref.blink.any()
    assert not np.allclose(plain.expression, with_ref.expression)
    np.testing.assert_array_equal(plain.pose_raw, with_ref.pose_raw)


def test_reference_pose_adds_relative_motion(networks):
    ref_video = np.zeros((5, 70), np.float32)
    ref_video[:, 64] = np.arange(5)  # pitch grows by 1 per frame, cyclic
    plain, _ = run(networks, 12)
    with_ref, _ = run(networks, 12, ref_pose=ref_video)
    delta = with_ref.coefficients[:, 64] - plain.coefficients[:, 64]
    np.testing.assert_allclose(delta, tile_rows(np.arange(5.0)[:, None], 12)[:, 0], atol=1e-5)
    np.testing.assert_array_equal(with_ref.coefficients[:, 65:70], plain.coefficients[:, 65:70])


def test_tile_rows():
    rows = np.arange(3)[:, None]
    assert tile_rows(rows, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_rows(rows, 2)[:, 0].tolist() == [0, 1]


@pytest.mark.parametrize("frames, window", [(1, None), (2, None), (3, 3), (12, 11), (13, 13), (40, 13)])
def test_smoothing_window(frames, window):
    pose = np.random.default_rng(0).normal(size=(frames, 6)).astype(np.float32)
    smoothed = smooth_pose(pose)
    assert smoothed.shape == pose.shape and smoothed.dtype == np.float32
    if window is None:
        np.testing.assert_array_equal(smoothed, pose)  # the reference crashes here
    else:
        from scipy.signal import savgol_filter

        expected = savgol_filter(pose.astype(np.float64), window, 2, axis=0)
        np.testing.assert_allclose(smoothed, expected, atol=1e-6)


def test_expnet_frames_are_independent(networks):
    expnet, _ = networks
    mels = torch.randn(6, 1, 80, 16)
    ref = torch.randn(6, 64)
    blink = torch.rand(6, 1)
    with torch.inference_mode():
        whole = expnet(mels, ref, blink)
        parts = torch.cat([expnet(mels[:2], ref[:2], blink[:2]), expnet(mels[2:], ref[2:], blink[2:])])
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=1e-5)
