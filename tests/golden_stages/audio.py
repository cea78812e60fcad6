"""Stages a (mel, windows), b (ExpNet) and c (PoseVAE + final coefficients)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from golden_stages import Check, GoldenSet, compare
from sadtalker.audio import crop_to_frames, load_audio, mel_spectrogram, mel_windows
from sadtalker.coeffs.expnet import ExpNet
from sadtalker.coeffs.generate import generate_coefficients
from sadtalker.coeffs.posevae import Audio2Pose
from sadtalker.networks import synthetic_network_state
from sadtalker.weights.loading import load_strict

TOL = 1e-4


@lru_cache(maxsize=4)
def _networks(seed: int) -> tuple[ExpNet, Audio2Pose]:
    expnet = load_strict(ExpNet(), synthetic_network_state(ExpNet(), "audio2exp.", seed), "audio2exp").eval()
    posevae = Audio2Pose()
    load_strict(posevae, synthetic_network_state(posevae, "audio2pose.", seed), "audio2pose").eval()
    return expnet, posevae


def run_a(golden: GoldenSet) -> list[Check]:
    ref = golden.npz("a_mel")
    wav = load_audio(golden.root / "input_audio.wav")
    cropped, frames = crop_to_frames(wav)
    mel = mel_spectrogram(cropped)
    checks = [
        compare("a", "wav16k", wav, ref["wav16k"], TOL),
        compare("a", "mel", mel, ref["mel"], TOL),
        compare("a", "indiv_mels", mel_windows(mel, frames), ref["indiv_mels"], TOL),
    ]
    expected = int(ref["num_frames"])
    checks.append(Check("a", "num_frames", abs(frames - expected), 0.0, f"{frames} vs {expected}"))
    return checks


def run_b(golden: GoldenSet) -> list[Check]:
    ref = golden.npz("b_audio2exp")
    expnet, _ = _networks(golden.seed)
    mels = torch.from_numpy(ref["indiv_mels"][0])  # (T, 1, 80, 16)
    with torch.inference_mode():
        ours = expnet(mels, torch.from_numpy(ref["ref"][0, :, :64]), torch.from_numpy(ref["ratio"][0]))
    return [compare("b", "exp_coeff_pred", ours.numpy()[None], ref["exp_coeff_pred"], TOL)]


def run_c(golden: GoldenSet) -> list[Check]:
    ref = golden.npz("c_audio2pose")
    blink = golden.npz("b_audio2exp")["ratio"][0] if golden.has("b_audio2exp") else None
    expnet, posevae = _networks(golden.seed)
    mels = ref["indiv_mels"][0, :, 0]  # (T, 80, 16)
    frames = mels.shape[0]
    if blink is None:
        blink = np.zeros((frames, 1), np.float32)
    result = generate_coefficients(
        expnet,
        posevae,
        mels,
        source=ref["ref"][0, 0],
        blink=blink,
        z=ref["z"].reshape(-1, ref["z"].shape[-1]),
        pose_style=int(ref["pose_style"]),
    )
    return [
        compare("c", "pose_pred_raw", result.pose_raw[None], ref["pose_pred_raw"], TOL),
        compare("c", "coeffs_pred", result.coefficients, ref["coeffs_pred"], TOL),
    ]


STAGES = {"a": run_a, "b": run_b, "c": run_c}
