"""Paste-back of rendered face frames into the original photo (modes ``full`` / ``extfull``).

Official counterpart: ``paste_pic`` (src/utils/paste_pic.py).

Differences from the reference, all robustness fixes:

* the frames pasted are the in-memory uint8 frames; the official code pastes frames decoded back from its
  crf-25 H.264 file (double lossy coding) and writes an MPEG-4 Part 2 file. Here the result goes to
  :class:`~sadtalker.video.encode.VideoWriter` (H.264);
* a box that extends past the image (face at a border; the official box comes from the unclipped quad) is
  not an error. The frame is resized to the *whole* box, as in the reference, and only its part inside the
  image is blended, so the face stays where the box says. A box given in the coordinates of a down-scaled
  image (``shrink > 1``; the official code pastes it unmapped) is mapped to the photo with ``box_space``. A
  box with less than 5 visible pixels in a dimension pastes nothing (the photo is returned unchanged, with
  one warning) instead of crashing ``cv2.seamlessClone``.

The box is plain ints ``(x1, y1, x2, y2)``, right/bottom exclusive, computed by the face module:
``full``: ``(clx + trunc(lx), cly + trunc(ly), clx + trunc(rx), cly + trunc(ry))``; ``extfull``: the crop
rectangle ``(clx, cly, crx, cry)``.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

log = logging.getLogger(__name__)

PASTE_THREADS = max(1, min(8, os.cpu_count() or 1))
"""Frames of a batch blended at once (OpenCV's Poisson blend releases the GIL): one frame takes about
10 ms on a 768 x 1024 photo, so at a GPU renderer's 200 frames/s one thread would halve the throughput."""


@functools.lru_cache(maxsize=1)
def _paste_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(PASTE_THREADS, thread_name_prefix="paste-back")


Box = tuple[int, int, int, int]

_MIN_SIDE = 5  # cv2.seamlessClone (OpenCV 4.x-5.0) fails on 3- and 4-pixel sides; found by trial


def scale_box(box: Box, box_space: tuple[int, int], image_size: tuple[int, int]) -> Box:
    """Map a box from an image of size ``box_space`` (W, H) to one of ``image_size`` (W, H), rounding."""
    (sw, sh), (w, h) = box_space, image_size
    if (sw, sh) == (w, h):
        return box
    fx, fy = w / sw, h / sh
    x1, y1, x2, y2 = box
    return round(x1 * fx), round(y1 * fy), round(x2 * fx), round(y2 * fy)


def clamp_box(box: Box, width: int, height: int) -> Box | None:
    """The part of ``box`` inside a ``width`` × ``height`` image, or None when it is empty."""
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    return cx1, cy1, cx2, cy2


class PasteBack:
    """Blends rendered frames into one background photo at one box; geometry is computed once per clip.

    Args:
        background_rgb: (H, W, 3) uint8 RGB original photo (for a video source: its first frame).
        box: (x1, y1, x2, y2) target box in ``box_space`` pixels; may extend past the image.
        box_space: (W, H) of the image the box refers to, when it is not the photo's own size (``shrink > 1``;
            the official code pastes such a box unmapped).

    Calling the object with a (h, w, 3) uint8 RGB rendered frame (any size; it is resized to the box with
    OpenCV bilinear) returns a new (H, W, 3) uint8 RGB frame; the background array is never modified.
    """

    def __init__(self, background_rgb: np.ndarray, box: Box, *, box_space: tuple[int, int] | None = None):
        bg = np.asarray(background_rgb)
        if bg.ndim != 3 or bg.shape[2] != 3 or bg.dtype != np.uint8:
            raise ValueError(f"background must be (H, W, 3) uint8, got {bg.shape} {bg.dtype}")
        self.background = np.ascontiguousarray(bg)
        height, width = bg.shape[:2]
        self.box: Box = tuple(int(v) for v in box)  # type: ignore[assignment]
        if box_space is not None:
            self.box = scale_box(self.box, box_space, (width, height))
        x1, y1, x2, y2 = self.box
        self.clamped = clamp_box(self.box, width, height) if x2 > x1 and y2 > y1 else None
        if self.clamped is not None:
            cx1, cy1, cx2, cy2 = self.clamped
            if cx2 - cx1 < _MIN_SIDE or cy2 - cy1 < _MIN_SIDE:
                self.clamped = None
        if self.clamped is None:
            log.warning(
                "paste box %s has no usable part inside the %dx%d photo: frames not pasted",
                self.box,
                width,
                height,
            )
        elif self.clamped != self.box:
            log.info(
                "paste box %s extends past the %dx%d photo; blending its visible part %s",
                self.box,
                width,
                height,
                self.clamped,
            )

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames returned: the photo's."""
        return self.background.shape[1], self.background.shape[0]

    def many(self, frames_rgb: np.ndarray) -> np.ndarray:
        """``np.stack([self(f) for f in frames_rgb])``, ``(B, h, w, 3)`` → ``(B, H, W, 3)``, the frames
        blended in parallel threads (:data:`PASTE_THREADS`); the same frames as one at a time."""
        if len(frames_rgb) <= 1 or PASTE_THREADS == 1:
            return np.stack([self(frame) for frame in frames_rgb])
        return np.stack(list(_paste_pool().map(self, frames_rgb)))

    def __call__(self, frame_rgb: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (h, w, 3) uint8, got {frame.shape} {frame.dtype}")
        if self.clamped is None:
            return self.background.copy()
        x1, y1, x2, y2 = self.box
        cx1, cy1, cx2, cy2 = self.clamped
        patch = cv2.resize(frame, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        patch = np.ascontiguousarray(patch[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1])
        mask = np.full(patch.shape, 255, dtype=np.uint8)
        # With this centre OpenCV maps patch pixel (1, 1) onto (cx1 + 1, cy1 + 1): the patch lands on the box.
        center = ((cx1 + cx2) // 2, (cy1 + cy2) // 2)
        # Poisson blending is per channel, so RGB in gives RGB out (the reference works in BGR).
        return cv2.seamlessClone(patch, self.background, mask, center, cv2.NORMAL_CLONE)


def paste_frame(
    background_rgb: np.ndarray, frame_rgb: np.ndarray, box: Box, *, box_space: tuple[int, int] | None = None
) -> np.ndarray:
    """One-off :class:`PasteBack`: (H, W, 3) photo + (h, w, 3) frame → (H, W, 3) uint8 RGB."""
    return PasteBack(background_rgb, box, box_space=box_space)(frame_rgb)
