"""The 257 Deep3DFaceRecon coefficients and SadTalker's 73-dim per-frame row.

Official counterpart: ``split_coeff`` and the ``coeff_3dmm`` row built in ``CropAndExtract.generate``
(src/utils/preprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: name -> [start, stop) in the 257-vector.
COEFF_SLICES: dict[str, tuple[int, int]] = {
    "id": (0, 80),
    "exp": (80, 144),
    "tex": (144, 224),
    "angle": (224, 227),  # pitch (x), yaw (y), roll (z), radians
    "gamma": (227, 254),  # SH lighting, 3 × 9
    "trans": (254, 257),  # tx, ty, tz
}
FULL_DIM = 257
SEMANTIC_DIM = 73  # exp 64 + angle 3 + trans 3 + crop (s, tx, ty)
#: dims of the audio stage (exp + angle + trans) and of the full modes (plus the crop parameters).
POSE_EXP_DIM = 70


@dataclass(frozen=True, eq=False)
class Coeffs3DMM:
    """The 257-vector split by meaning; every field is (B, n) with the input's dtype."""

    id: np.ndarray
    exp: np.ndarray
    tex: np.ndarray
    angle: np.ndarray
    gamma: np.ndarray
    trans: np.ndarray


def split_coeffs(full: np.ndarray) -> Coeffs3DMM:
    """(B, 257) -> :class:`Coeffs3DMM` (views, no copy)."""
    full = np.asarray(full)
    if full.ndim != 2 or full.shape[1] != FULL_DIM:
        raise ValueError(f"expected (B, {FULL_DIM}) coefficients, got {full.shape}")
    return Coeffs3DMM(**{name: full[:, a:b] for name, (a, b) in COEFF_SLICES.items()})


def semantic_row(full: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """SadTalker's saved ``coeff_3dmm`` row(s): ``[exp (64), angle (3), trans (3), s, t.x, t.y]``.

    Args:
        full: (B, 257) float32 network output.
        trans_params: (5,) ``(W, H, s, t.x, t.y)`` of the 224 alignment (float32, as the reference casts
            it before concatenating), or (B, 5) for one per row.

    Returns:
        (B, 73) float32.
    """
    parts = split_coeffs(full)
    crop = np.asarray(trans_params, dtype=np.float32)
    crop = np.broadcast_to(crop.reshape(-1, 5)[:, 2:], (parts.exp.shape[0], 3))
    return np.concatenate([parts.exp, parts.angle, parts.trans, crop], axis=1).astype(np.float32)
