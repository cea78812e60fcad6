"""Renderer output → uint8 frames of the output size, and the optional enhancer hook.

Official counterpart: the frame steps of ``AnimateFromCoeff.generate`` (src/facerender/animate.py).

Pure functions over numpy arrays; no I/O. Order in a pipeline::

    frames = to_uint8(chw_to_hwc(rendered))          # (N, S, S, 3) uint8, values RGB
    frames = resize_frames(frames, *output_size(S, (r_w, r_h)))
    frames = [paste(f) for f in frames]              # full / extfull modes only (paste.PasteBack)
    frames = [enhancer(f) for f in frames]           # optional FrameEnhancer; may change the size
    writer.write(frames)                             # encode.VideoWriter
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


def chw_to_hwc(frames: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) → (N, H, W, 3) (or (3, H, W) → (H, W, 3)), e.g. the renderer's ``prediction`` tensor
    after ``.cpu().numpy()``. A view, no copy."""
    if frames.ndim not in (3, 4) or frames.shape[-3] != 3:
        raise ValueError(f"expected (N, 3, H, W) or (3, H, W), got shape {frames.shape}")
    return np.moveaxis(frames, -3, -1)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] → uint8 as ``rint(x · 255)`` clipped to [0, 255] (skimage ``img_as_ubyte``).

    The product is computed in float32 (the renderer's dtype; float64 input stays float64, float16 is
    upcast where scikit-image would stay in float16), and rounding is half-to-even, as in the reference.
    Any shape; the channel order is untouched. scikit-image raises on values outside [-1, 1]; here they
    are clipped. Non-finite values raise ``ValueError`` (a renderer bug
    must not become black pixels silently).
    """
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"expected float frames in [0, 1], got {frames.dtype}")
    compute = np.float64 if frames.dtype == np.float64 else np.float32
    scaled = np.multiply(frames, compute(255.0), dtype=compute)
    if not np.isfinite(scaled).all():
        raise ValueError("frames contain NaN or infinite values")
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


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


def postprocess(
    rendered: np.ndarray, size: int, ref_wh: tuple[int, int], num_frames: int | None = None
) -> np.ndarray:
    """The official post-render steps in one call: first ``num_frames`` of (T', S, S, 3) float frames →
    (T, h, S, 3) uint8 RGB.

    Args:
        rendered: (T', S, S, 3) float in [0, 1], channels last (see :func:`chw_to_hwc`).
        size: S.
        ref_wh: ``crop_info[0]``.
        num_frames: T; None keeps every frame (the renderer pads T up to a multiple of its batch size).
    """
    frames = rendered[:num_frames] if num_frames is not None else rendered
    return resize_frames(to_uint8(frames), *output_size(size, ref_wh))
