"""Sharpness of a face region: CPBD, the cumulative probability of blur detection (Narvekar & Karam, "A
no-reference image blur metric based on the cumulative probability of blur detection (CPBD)", IEEE TIP
20(9), 2011). Our own implementation with OpenCV and numpy, following the paper:

1. Edges: vertical edges from the horizontal Sobel gradient (``gx²`` above 4x its mean, thinned to local
   maxima along the row, as MATLAB's ``edge(I, 'sobel', 'vertical')`` does), kept where the gradient
   direction rounds to 0° or 180° (the paper measures widths along rows only). Canny edges (MATLAB's
   automatic thresholds: high at the 70th percentile of the gradient magnitude, low = 0.4 x high) decide
   which blocks are edge blocks.
2. Edge width (Marziliano et al. 2002): the distance between the local intensity extrema on either side of
   the edge pixel along the row (strictly monotonic runs).
3. Blocks (16 x 16 on a 64 x 64 face crop: the paper's 64 x 64 blocks of 512-pixel images, scaled to
   the crop) with more than 0.2 % Canny edge pixels are edge blocks; each block's contrast
   ``C = max - min`` sets the just-noticeable blur width ``w_JNB = 5`` for ``C <= 50``, else 3.
4. Each edge of an edge block has a blur detection probability ``P = 1 - exp(-(w / w_JNB)^3.6)``
   (beta = 3.6); CPBD is the share of edges with ``P <= P_JNB = 63 %`` (rounded to whole percent as the
   reference code's histogram does). 1 = every edge sharp, 0 = every edge blurred.

The face region is the box of the facial features (landmarks 17-67, grown by 15 %) in the output frame
and in the source photo, the source brought to the output face's resolution first, both then resized to
64 x 64 px: the ratio says how much the render softened the face, whatever the photo's own sharpness.
(The detector's box is not used: its size jumps between pyramid levels and moves CPBD by ~30 %.)
Why 64 px: CPBD targets *just noticeable* blur and is very steep (on the test portrait's ~130 px face, a
Gaussian blur of sigma 0.7 px already divides it by 3 at full resolution). SadTalker's renderer computes
its motion field at 64 x 64 and its 256 px output is softer than the photo at the finest scale (what a face
enhancer is for). At 64 px: a blur of sigma 0.5 px (at 256) keeps 85 % of the source's CPBD, 1 px 45 %,
1.5 px 3 %, 2 px and more 0 % (docs/qc.md).
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 64
BLOCK = 16
BETA = 3.6
P_JNB = 0.63
EDGE_BLOCK_SHARE = 0.002


def face_crop(image: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray | None:
    """The square around ``box`` (side = its longer side, clamped to the image) as ``(size, size)`` uint8
    grey, or None when the box is empty."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(max(cx - side / 2, 0))), int(round(max(cy - side / 2, 0)))
    right, bottom = int(round(min(cx + side / 2, width))), int(round(min(cy + side / 2, height)))
    if right - left < 8 or bottom - top < 8:
        return None
    crop = image[top:bottom, left:right]
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    shrink = max(crop.shape[:2]) > size
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _run_ends(image: np.ndarray, rising: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the column of the extremum ending the monotonic run through it, to the left and right
    (rising: intensity strictly increasing left to right; falling: strictly decreasing)."""
    d = np.diff(image, axis=1)  # d[:, j] = I[:, j+1] - I[:, j]
    step = d > 0 if rising else d < 0
    rows, cols = image.shape
    right = np.empty((rows, cols), dtype=np.int32)
    left = np.empty((rows, cols), dtype=np.int32)
    right[:, -1] = cols - 1
    for j in range(cols - 2, -1, -1):  # one vectorised step per column: cheaper than a per-pixel walk
        right[:, j] = np.where(step[:, j], right[:, j + 1], j)
    left[:, 0] = 0
    for j in range(1, cols):
        left[:, j] = np.where(step[:, j - 1], left[:, j - 1], j)
    return left, right


def cpbd(grey: np.ndarray) -> float | None:
    """CPBD of a uint8 (or float 0-255) grey image; None when it has no measurable edge."""
    image = np.asarray(grey, dtype=np.float64)
    gx = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3)
    power = gx * gx
    cutoff = 4 * power.mean()
    if cutoff <= 0:
        return None
    thin = np.zeros_like(power, dtype=bool)
    thin[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    angle = np.degrees(np.arctan2(gy, gx))
    horizontal_gradient = (np.abs(angle) <= 22.5) | (np.abs(angle) >= 157.5)
    vertical_edges = (power > cutoff) & thin & horizontal_gradient
    vertical_edges[:, 0] = vertical_edges[:, -1] = False

    smooth = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (0, 0), np.sqrt(2))
    magnitude = np.hypot(
        cv2.Sobel(smooth, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_64F, 0, 1, ksize=3)
    )
    high = float(np.percentile(magnitude, 70))
    if high <= 0:
        return None
    canny = cv2.Canny(smooth, 0.4 * high, high, L2gradient=True) > 0

    rising_left, rising_right = _run_ends(image, rising=True)
    falling_left, falling_right = _run_ends(image, rising=False)
    rising = gx > 0
    widths = np.where(rising, rising_right - rising_left, falling_right - falling_left).astype(np.float64)

    sharp = total = 0
    rows, cols = image.shape
    for top in range(0, rows - BLOCK + 1, BLOCK):
        for left in range(0, cols - BLOCK + 1, BLOCK):
            block = (slice(top, top + BLOCK), slice(left, left + BLOCK))
            if np.count_nonzero(canny[block]) <= EDGE_BLOCK_SHARE * BLOCK * BLOCK:
                continue
            w = widths[block][vertical_edges[block]]
            w = w[w > 0]
            if w.size == 0:
                continue
            contrast = image[block].max() - image[block].min()
            w_jnb = 5.0 if contrast <= 50 else 3.0
            p_blur = 1 - np.exp(-((w / w_jnb) ** BETA))
            sharp += int(np.count_nonzero(np.round(p_blur * 100) <= P_JNB * 100))
            total += w.size
    return sharp / total if total else None
