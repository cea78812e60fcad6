"""Mel windows + source coefficients -> (T, 70) motion coefficients (official ``Audio2Coeff.generate``,
src/test_audio2coeff.py, with the reference rows of ``get_data`` in src/generate_batch.py).

``[expression (64) | head pose (6)]`` per frame: ExpNet's expression, PoseVAE's pose smoothed with a
Savitzky-Golay filter, optional reference-video expression (eye blinks) and pose motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sadtalker.coeffs.expnet import EXPRESSION_DIM, ExpNet
from sadtalker.coeffs.posevae import Audio2Pose

EXPNET_CHUNK = 200  # frames per ExpNet batch: frames are independent, this only bounds memory
LATENT_DIM = 64


@dataclass(frozen=True)
class MotionCoefficients:
    """What the audio stage produces for one clip."""

    coefficients: np.ndarray  # (T, 70) float32: expression (64) | smoothed pose (6)
    expression: np.ndarray  # (T, 64) ExpNet output
    pose_raw: np.ndarray  # (T, 6) pose before smoothing
    blink: np.ndarray  # (T, 1) blink curve used
    z: np.ndarray  # (draws, 64) latent noise used


def tile_rows(rows: np.ndarray, frames: int) -> np.ndarray:
    """Repeat ``rows`` (N, D) cyclically, or truncate, to ``(frames, D)``, as the official
    ``get_data`` and ``Audio2Coeff.using_refpose`` tile reference rows."""
    if len(rows) == 0:
        raise ValueError("reference coefficients are empty")
    repeats = -(-frames // len(rows))
    return np.concatenate([rows] * repeats, axis=0)[:frames]


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay along time (window 13, or the largest odd <= T; polyorder 2; float64 inside).

    The reference crashes for T <= 2 (window < polyorder + 1); here such short poses are left as they are.
    """
    from scipy.signal import savgol_filter

    frames = pose.shape[0]
    window = 13 if frames >= 13 else 2 * ((frames - 1) // 2) + 1
    if window <= 2:
        return pose.astype(np.float32)
    return savgol_filter(pose.astype(np.float64), window, 2, axis=0).astype(np.float32)


def draw_latents(posevae: Audio2Pose, frames: int, seed: int) -> np.ndarray:
    """The PoseVAE latent noise of one item, from a generator seeded by the item's seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(posevae.num_draws(frames), LATENT_DIM, generator=generator).numpy()


@torch.inference_mode()
def generate_coefficients(
    expnet: ExpNet,
    posevae: Audio2Pose,
    mels: np.ndarray,
    source: np.ndarray,
    blink: np.ndarray,
    z: np.ndarray,
    pose_style: int = 0,
    ref_eyeblink: np.ndarray | None = None,
    ref_pose: np.ndarray | None = None,
) -> MotionCoefficients:
    """Run ExpNet and PoseVAE and assemble the clip's coefficients.

    Args:
        mels: ``(T, 80, 16)`` mel windows (an array or a :class:`sadtalker.audio.mel.MelWindows`).
        source: ``(70,)`` (or more) source coefficients: expression 0:64, angles 64:67, translation 67:70.
        blink: ``(T, 1)`` eye-closure ratio (ignored, all zeros, when ``ref_eyeblink`` is given).
        z: ``(posevae.num_draws(T), 64)`` latent noise.
        pose_style: 0..45.
        ref_eyeblink: ``(N, >=64)`` reference-video coefficients whose expression replaces beta0.
        ref_pose: ``(N, >=70)`` reference-video coefficients whose pose motion is added after smoothing.

    Returns:
        :class:`MotionCoefficients` with ``coefficients`` ``(T, 70)``.
    """
    frames = mels.shape[0]
    if frames < 1:
        raise ValueError("no frames")
    if not 0 <= pose_style < posevae.cfg.num_classes:
        raise ValueError(f"pose_style must be in [0, {posevae.cfg.num_classes}), got {pose_style}")
    param = next(expnet.parameters())
    device, dtype = param.device, param.dtype
    reference = np.repeat(np.asarray(source[:70], dtype=np.float32)[None], frames, axis=0)  # (T, 70)
    if ref_eyeblink is not None:
        reference[:, :EXPRESSION_DIM] = tile_rows(np.asarray(ref_eyeblink)[:, :EXPRESSION_DIM], frames)
        blink = np.zeros((frames, 1), dtype=np.float32)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    expression = []
    for start in range(0, frames, EXPNET_CHUNK):
        stop = min(frames, start + EXPNET_CHUNK)
        out = expnet(
            tensor(mels[start:stop])[:, None],  # (n, 1, 80, 16)
            tensor(reference[start:stop, :EXPRESSION_DIM]),
            tensor(blink[start:stop]),
        )
        expression.append(out.float().cpu().numpy())
    expression_arr = np.concatenate(expression, axis=0)

    pose_raw = (
        posevae.generate(mels, tensor(reference[0, 64:70]), pose_style, tensor(z)).float().cpu().numpy()
    )
    pose = smooth_pose(pose_raw)
    if ref_pose is not None:
        rows = tile_rows(np.asarray(ref_pose, dtype=np.float32)[:, 64:70], frames)
        pose = pose + rows - rows[:1]
    coefficients = np.concatenate([expression_arr, pose], axis=1).astype(np.float32)
    return MotionCoefficients(coefficients, expression_arr, pose_raw, np.asarray(blink, np.float32), z)
