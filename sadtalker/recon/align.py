"""Similarity alignment of the S×S source to the 224×224 input of the 3DMM regressor.

Deep3DFaceRecon's rule (``align_img`` in ``src/face3d/util/preprocess.py`` of the reference): 68 → 5
points, a weak-perspective least-squares fit (POS) of the 5 image points to the standard face's 5 points,
a scale ``s = 102 / s_pos``, then a Pillow-bicubic resize by ``s`` and a 224×224 crop. Pure functions;
float dtypes follow the reference so ``trans_params`` and the crop offsets match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sadtalker.recon.standard_face import STANDARD_FACE_LM3D

TARGET_SIZE = 224
RESCALE_FACTOR = 102.0


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """68 → 5 points: left-eye centre (mean of 36, 39), right-eye centre (42, 45), nose tip (30), mouth
    corners (48, 54), in that order.

    Args:
        landmarks: (68, 2) or (68, 3); the dtype is kept (the reference works in float32).

    Returns:
        (5, 2) or (5, 3).
    """
    lm = np.asarray(landmarks)
    if lm.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks, got {lm.shape}")
    return np.stack(
        [
            np.mean(lm[[36, 39]], axis=0),
            np.mean(lm[[42, 45]], axis=0),
            lm[30],
            lm[48],
            lm[54],
        ],
        axis=0,
    )


#: (5, 3) float32: the standard face's five points (as the official ``load_lm3d`` computes them).
STANDARD_FIVE_POINTS: np.ndarray = five_points(STANDARD_FACE_LM3D)


def pos_fit(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[np.ndarray, float]:
    """POS: least-squares weak-perspective fit ``u = r1·X + a``, ``v = r2·X + b`` (official ``POS``).

    Args:
        points_2d: (N, 2) image points (y up).
        points_3d: (N, 3) model points.

    Returns:
        ``t`` (2,) float64 = (a, b) and ``s_pos = (|r1| + |r2|) / 2``.
    """
    n = points_2d.shape[0]
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = points_3d
    a[0::2, 3] = 1
    a[1::2, 4:7] = points_3d
    a[1::2, 7] = 1
    b = np.reshape(points_2d, (2 * n, 1))  # u0, v0, u1, v1, ...
    k = np.linalg.lstsq(a, b, rcond=None)[0][:, 0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def crop_offsets(width: int, height: int, t: np.ndarray, s: float) -> tuple[int, int, int, int]:
    """Resized size ``(w, h)`` and the crop's top-left ``(left, up)`` of the official ``resize_n_crop_img``,
    all truncated toward zero by ``astype(np.int32)`` as there, also for negative values (where flooring
    would move the crop by one pixel)."""
    w = int(np.float64(width * s).astype(np.int32))
    h = int(np.float64(height * s).astype(np.int32))
    half = TARGET_SIZE / 2
    left = int(np.float64(w / 2 - half + float((t[0] - width / 2) * s)).astype(np.int32))
    up = int(np.float64(h / 2 - half + float((height / 2 - t[1]) * s)).astype(np.int32))
    return w, h, left, up


@dataclass(frozen=True, eq=False)
class Aligned:
    """Output of :func:`align_face_224`.

    Attributes:
        image: (224, 224, 3) uint8 RGB aligned face; black where the crop leaves the image.
        trans_params: (5,) float32 ``(W, H, s, t.x, t.y)``; ``t`` in S×S pixels with y up.
        landmarks: (68, 2) float64 landmarks in the 224 image, **y up** (as the reference returns them).
    """

    image: np.ndarray
    trans_params: np.ndarray
    landmarks: np.ndarray


def align_face_224(image: np.ndarray, landmarks: np.ndarray) -> Aligned:
    """Align the S×S source image for the 3DMM regressor (official ``align_img``).

    Args:
        image: (H, W, 3) uint8 RGB (the S×S source image).
        landmarks: (68, 2) (x, y) in ``image`` pixels, **y down** (as detected). Converted to float32 like
            the reference's landmarks.

    Returns:
        :class:`Aligned`.
    """
    height, width = image.shape[:2]
    lm = np.array(landmarks, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    lm[:, 1] = height - 1 - lm[:, 1]  # y up
    t, s_pos = pos_fit(five_points(lm), STANDARD_FIVE_POINTS)
    s = RESCALE_FACTOR / s_pos
    w, h, left, up = crop_offsets(width, height, t, s)

    resized = Image.fromarray(image).resize((w, h), resample=Image.Resampling.BICUBIC)
    aligned = np.asarray(resized.crop((left, up, left + TARGET_SIZE, up + TARGET_SIZE)), dtype=np.uint8)

    lm_out = np.stack([lm[:, 0] - t[0] + width / 2, lm[:, 1] - t[1] + height / 2], axis=1) * s
    lm_out = lm_out - np.array([[w / 2 - TARGET_SIZE / 2, h / 2 - TARGET_SIZE / 2]])
    trans_params = np.array([width, height, s, t[0], t[1]], dtype=np.float64).astype(np.float32)
    return Aligned(image=np.ascontiguousarray(aligned), trans_params=trans_params, landmarks=lm_out)
