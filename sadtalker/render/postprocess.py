"""The renderer's float frames in (0, 1) -> uint8 RGB, on the device before the copy to the host (the
scikit-image ``img_as_ubyte`` of the official ``AnimateFromCoeff.generate``, src/facerender/animate.py:
``rint(x · 255)``, round half to even, clipped). The resize to the crop's aspect ratio lives in
:mod:`sadtalker.video.postprocess`.
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
