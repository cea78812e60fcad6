"""Frame post-processing of the face renderer's output (SadTalker §3.3 face render; SPEC §6.10).

Float frames in (0, 1) → uint8 RGB (scikit-image ``img_as_ubyte``: ``rint(x · 255)``, round half to even,
clipped) → resized to the aspect ratio of the face crop (OpenCV bilinear, width S).
"""

from __future__ import annotations

import numpy as np
import torch


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(B, 3, S, S)`` float in [0, 1] (any device) → ``(B, S, S, 3)`` uint8 RGB on the CPU.

    The multiplication is done in float32 and rounded half to even, as ``img_as_ubyte`` does.
    """
    scaled = (frames.detach().float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def output_frame_size(size: int, crop_size: tuple[float, float]) -> tuple[int, int]:
    """``(width, height)`` of the written frames: ``(S, trunc(S · r_h / r_w))``.

    ``crop_size = (r_w, r_h)`` is ``crop_info[0]`` of the preprocessing (quad box size; the original image
    size in resize mode).
    """
    r_w, r_h = crop_size
    return size, int(size * r_h / r_w)


def resize_to_crop_aspect(frames: np.ndarray, crop_size: tuple[float, float]) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 → ``(B, trunc(S·r_h/r_w), S, 3)`` with OpenCV bilinear (always resampled)."""
    import cv2

    size = frames.shape[2]
    width, height = output_frame_size(size, crop_size)
    return np.stack([cv2.resize(frame, (width, height)) for frame in frames])
