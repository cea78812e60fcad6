"""Face restoration of rendered frames, in batches: pure pre/post-processing and :func:`enhance_frames`.

The renderer's frames are already aligned face crops, so GFPGAN's detect-align-paste helper is not needed:
this is ``GFPGANer.enhance(face, has_aligned=True)`` on each frame, then the restored 512 x 512 face resized
back to the frame's size.

Steps (uint8 path; what the official inference does up to the last one):

1. :func:`to_network`: each ``(H, W, 3)`` uint8 RGB frame resized to 512 x 512 with ``cv2.resize`` (bilinear;
   no-op at 512), ``x / 255`` (float64, then float32), ``(x - 0.5) / 0.5``, as ``(N, 3, 512, 512)``.
2. the network (:class:`sadtalker.enhance.gfpgan.GFPGANv1Clean`), on the device.
3. :func:`from_network`: clamp to [-1, 1], ``(y + 1) / 2``, ``x 255``, round half to even, uint8 (basicsr
   ``tensor2img(min_max=(-1, 1))``), in float32, on the device before the copy to the host.
4. :func:`resize_back`: 512 -> the frame's size, ``cv2.INTER_AREA`` when shrinking (no aliasing),
   bilinear when enlarging. (Not an official step: the official helper warps the face into a 2x upscaled
   photo instead.)

Float tensors ``(N, 3, H, W)`` in [0, 1] take the same steps on the device with ``F.interpolate``
(bilinear; antialiased when shrinking) and without the uint8 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FACE_SIZE", "enhance_frames", "from_network", "resize_back", "to_network"]

FACE_SIZE = 512
DEFAULT_BATCH = 4


def _check_uint8(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")


def to_network(frames: np.ndarray, size: int = FACE_SIZE) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 RGB -> ``(N, 3, size, size)`` float32 in [-1, 1] (CPU)."""
    frames = np.asarray(frames)
    _check_uint8(frames)
    resized = np.stack(
        [
            f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
            for f in frames
        ]
    )
    scaled = (resized / 255.0).astype(np.float32)  # float64 division, then float32, as the official path
    tensor = torch.from_numpy(scaled).permute(0, 3, 1, 2)
    return ((tensor - 0.5) / 0.5).contiguous()


def from_network(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, h, w)`` network output (any device) -> ``(N, h, w, 3)`` uint8 RGB on the CPU."""
    unit = (images.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0
    pixels = (unit * 255.0).round_().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def resize_back(faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(N, s, s, 3)`` uint8 -> ``(N, height, width, 3)``: area-averaged when shrinking, else bilinear."""
    if faces.shape[1:3] == (height, width):
        return faces
    shrink = height < faces.shape[1] or width < faces.shape[2]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in faces])


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(count, start + batch_size))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def enhance_frames(
    frames: np.ndarray | torch.Tensor,
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> np.ndarray | torch.Tensor:
    """Restore every face in ``frames``; the result has the input's shape and type.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB (numpy), or ``(N, 3, H, W)`` float in [0, 1] (a torch tensor on
            any device; returned on that device in its dtype). A single frame (no ``N``) is accepted too.
        model: the restorer (:func:`sadtalker.enhance.gfpgan.load_gfpgan`), in eval mode.
        device: where the network runs; default the model's own device (it must be there already).
        batch_size: frames per forward pass (memory vs speed; no effect on the result beyond float32
            rounding).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    run_on = torch.device(device) if device is not None else _model_device(model)
    if _model_device(model).type != run_on.type:
        raise ValueError(f"the enhancer is on {_model_device(model)}, not on {run_on}")
    size = getattr(getattr(model, "cfg", None), "out_size", FACE_SIZE)
    if isinstance(frames, torch.Tensor):
        return _enhance_tensor(frames, model, run_on, batch_size, size)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        return enhance_frames(frames[None], model, device, batch_size)[0]
    _check_uint8(frames)
    out = np.empty_like(frames)
    height, width = frames.shape[1:3]
    for part in _batches(len(frames), batch_size):
        restored = model(to_network(frames[part], size).to(run_on))
        out[part] = resize_back(from_network(restored), height, width)
    return out


def _enhance_tensor(
    frames: torch.Tensor, model: torch.nn.Module, run_on: torch.device, batch_size: int, size: int
) -> torch.Tensor:
    if frames.ndim == 3:
        return _enhance_tensor(frames[None], model, run_on, batch_size, size)[0]
    if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
        raise ValueError(f"float frames must be (N, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    height, width = frames.shape[2:]
    parts = []
    for part in _batches(len(frames), batch_size):
        x = frames[part].to(run_on, torch.float32)
        if (height, width) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        y = (model(x * 2.0 - 1.0).clamp(-1.0, 1.0) + 1.0) / 2.0
        if (height, width) != (size, size):
            shrink = height < size or width < size
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
        parts.append(y.clamp(0.0, 1.0).to(frames.device, frames.dtype))
    return torch.cat(parts)
