"""The renderer's per-frame inputs from a clip's coefficients (SadTalker §3.3 face render): pure numpy.

Official counterpart: ``get_facerender_data`` and ``gen_camera_pose`` in src/generate_facerender_batch.py.

* the source semantics (the source's coefficients as a 27-column window);
* the target coefficients (expression scale, ``full``-mode crop parameters, still mode);
* the 27-frame coefficient windows around each frame (radius 13, clamped at both ends);
* the free-view camera angle sequences (``--input_yaw/--input_pitch/--input_roll``);
* the reference's ``(batch_size, steps, ...)`` batch layout, for comparisons with the official outputs
  (our renderer streams frames in natural order: batch composition does not change values).

Coefficient rows are the 73-dim rows of the 3DMM stage: expression 0:64, angles 64:67, translation 67:70,
crop parameters 70:73 (used only in the ``full`` modes, where the renderer takes 73 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

SEMANTIC_RADIUS = 13
WINDOW = 2 * SEMANTIC_RADIUS + 1  # 27 frames per MappingNet input
EXPRESSION_DIMS = 64  # coefficient dims scaled by ``expression_scale``
POSE_START = 64  # dims [64, C) are overwritten by the source's in still mode
BASE_NC = 70  # expression + pose
FULL_NC = 73  # + crop scale and translation (full / extfull modes)


def source_semantics(source_coeffs: np.ndarray, coeff_nc: int) -> np.ndarray:
    """The source's first ``coeff_nc`` coefficients repeated over the window: ``(≥C,)`` → ``(C, 27)``."""
    row = np.asarray(source_coeffs, dtype=np.float32).reshape(-1)
    if coeff_nc not in (BASE_NC, FULL_NC) or row.shape[0] < coeff_nc:
        raise ValueError(f"need {coeff_nc} source coefficients (70 or 73), got {row.shape[0]}")
    return np.repeat(row[:coeff_nc, None], WINDOW, axis=1)


def target_coefficients(
    coeffs: np.ndarray,
    source_coeffs: np.ndarray,
    *,
    expression_scale: float = 1.0,
    still: bool = False,
    full: bool = False,
) -> np.ndarray:
    """Driving coefficients as the renderer sees them: ``(T, 70)`` → ``(T, C)`` float32, C = 73 if ``full``.

    In the order of the official ``get_facerender_data``: expression dims ×``expression_scale`` (only the
    target frames; the source is not scaled, as there);
    ``full``: append the source's crop parameters (dims 70:73) to every frame; ``still``: overwrite dims
    ``[64, C)`` of every frame with the source's (pose, and crop parameters in full mode).

    Args:
        coeffs: ``(T, ≥70)`` predicted coefficients (only the first 70 columns are used).
        source_coeffs: the source's coefficient row, ``(70,)`` or ``(73,)`` (73 needed when ``full``).
    """
    arr = np.asarray(coeffs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] < BASE_NC or arr.shape[0] == 0:
        raise ValueError(f"expected (T >= 1, 70) coefficients, got {arr.shape}")
    out = arr[:, :BASE_NC].copy()
    source = np.asarray(source_coeffs, dtype=np.float32).reshape(-1)
    nc = FULL_NC if full else BASE_NC
    if source.shape[0] < nc:
        raise ValueError(
            f"{'full' if full else 'crop'} mode needs {nc} source coefficients, got {source.shape[0]}"
        )
    out[:, :EXPRESSION_DIMS] *= np.float32(expression_scale)
    if full:
        out = np.concatenate([out, np.repeat(source[None, BASE_NC:FULL_NC], out.shape[0], axis=0)], axis=1)
    if still:
        out[:, POSE_START:nc] = source[POSE_START:nc]
    return out


def window_indices(frames: np.ndarray, num_frames: int, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """Frame indices of each window: ``(N,)`` frame numbers → ``(N, 2·radius+1)``, clamped to [0, T-1]."""
    offsets = np.arange(-radius, radius + 1)
    return np.clip(np.asarray(frames)[:, None] + offsets[None, :], 0, num_frames - 1)


def semantic_windows(
    coeffs: np.ndarray, frames: np.ndarray | None = None, radius: int = SEMANTIC_RADIUS
) -> np.ndarray:
    """MappingNet inputs: ``(T, C)`` coefficients → ``(N, C, 2·radius+1)`` windows of the ``frames``.

    Window column j of frame f holds frame ``clamp(f - radius + j, 0, T-1)``. ``frames`` defaults to
    all T frames; pass a slice (e.g. one render batch) to keep memory independent of T.
    """
    coeffs = np.asarray(coeffs)
    frames = np.arange(coeffs.shape[0]) if frames is None else np.asarray(frames)
    return coeffs[window_indices(frames, coeffs.shape[0], radius)].transpose(0, 2, 1)


def to_reference_layout(per_frame: np.ndarray, batch_size: int) -> np.ndarray:
    """The official batch layout: ``(T, ...)`` → ``(batch_size, n, ...)``, ``n = ceil(T / batch_size)``.

    Pads to ``n · batch_size`` with copies of the last entry, then reshapes row-major, so batch slot b at
    step j holds frame ``b·n + j``.
    """
    per_frame = np.asarray(per_frame)
    pad = -per_frame.shape[0] % batch_size
    if pad:
        per_frame = np.concatenate([per_frame, np.repeat(per_frame[-1:], pad, axis=0)], axis=0)
    return per_frame.reshape(batch_size, -1, *per_frame.shape[1:])


def from_reference_layout(batched: np.ndarray, num_frames: int) -> np.ndarray:
    """Inverse of :func:`to_reference_layout`: ``(batch_size, n, ...)`` → ``(T, ...)`` (padding dropped)."""
    batched = np.asarray(batched)
    return batched.reshape(-1, *batched.shape[2:])[:num_frames]


def camera_angle_sequence(angles: Sequence[float], num_frames: int) -> np.ndarray:
    """Free-view angle per frame (degrees), ``(T,)`` float64, from the user's list of key angles.

    One angle: constant. Several: the total path ``Σ|a_{k+1} - a_k|`` is spread evenly over ``T - 1`` frame
    steps; each leg contributes ``np.arange(a_k, a_{k+1}, ±step)`` (end excluded); the result is cut to T or
    padded with its last value. This equals the official ``gen_camera_pose`` wherever it works; it divides
    by zero for equal consecutive angles or ``T = 1``, which is fixed here: a leg between equal angles
    contributes no frames, ``T = 1`` gives ``[a_0]``, and when nothing moves at all every frame holds ``a_0``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    keys = [float(a) for a in angles]
    if not keys:
        raise ValueError("at least one angle is needed")
    if len(keys) == 1 or num_frames == 1:
        return np.full(num_frames, keys[0], dtype=np.float64)
    total = sum(abs(b - a) for a, b in pairwise(keys))
    per_frame = total / (num_frames - 1)
    legs = [np.arange(a, b, per_frame * abs(b - a) / (b - a)) for a, b in pairwise(keys) if b != a]
    seq = np.concatenate(legs) if legs else np.full(1, keys[0])
    if seq.shape[0] >= num_frames:
        return seq[:num_frames].astype(np.float64)
    return np.concatenate([seq, np.full(num_frames - seq.shape[0], seq[-1])]).astype(np.float64)
