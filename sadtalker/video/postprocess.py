"""The render engine's uint8 frames → frames of the output size, and the optional enhancer hook.

Official counterpart: the frame steps of ``AnimateFromCoeff.generate`` (src/facerender/animate.py).

Pure functions over numpy arrays; no I/O. Order in a pipeline (:func:`sadtalker.pipeline.render_video`)::

    for frames in animator.frames(face, coeffs, options, stats):   # (N, S, S, 3) uint8 RGB (render engine)
        frames = resize_frames(frames, *output_size(S, (r_w, r_h)))
        frames = paste.many(frames)                  # full / extfull modes only (paste.PasteBack)
        frames = [enhancer(f) for f in frames]       # optional FrameEnhancer; may change the size
        writer.write(frames)                         # encode.VideoWriter
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@runtime_checkable
class FrameEnhancer(Protocol):
    """Optional face restoration applied to each final frame before encoding (GFPGAN / RestoreFormer in the
    official src/utils/face_enhancer.py; none implemented here).

    ``__call__(frame_rgb)`` takes one (H, W, 3) uint8 RGB frame (the pasted full frame in full modes, the
    resized crop otherwise) and returns a uint8 RGB frame, possibly larger (GFPGAN v1.4 doubles it); every
    call must return the same size, since the :class:`~sadtalker.video.encode.VideoWriter` takes its size from
    the first frame. It must not keep references to its input (the caller may reuse the buffer).
    """

    def __call__(self, frame_rgb: np.ndarray) -> np.ndarray: ...


def output_size(size: int, ref_wh: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the output frames: ``(S, trunc(S · r_h / r_w))``, as the official code.

    Args:
        size: S, the render size (256 or 512).
        ref_wh: ``crop_info[0]`` = (r_w, r_h): the quad box size (crop/full modes) or the original image size
            (resize mode).
    """
    r_w, r_h = ref_wh
    if r_w <= 0 or r_h <= 0:
        raise ValueError(f"reference size must be positive, got {ref_wh}")
    height = int(size * r_h / r_w)  # same operation order as the reference: (S * r_h) / r_w, then trunc
    if height < 1:
        raise ValueError(f"output height would be {height} for size {size} and reference {ref_wh}")
    return size, height


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (N, H, W, C) or (H, W, C) frames to (…, height, width, C) with OpenCV bilinear
    (``cv2.INTER_LINEAR``, no anti-aliasing), as the reference does even when the size is unchanged."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        return cv2.resize(frames, (width, height), interpolation=cv2.INTER_LINEAR)
    if frames.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) or (H, W, C), got shape {frames.shape}")
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR).reshape(out.shape[1:])
    return out
