"""GPU paths: the renderer on CUDA in float32 matches the CPU, and half precision stays close."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker.render.animate import source_image_array
from sadtalker.render.windows import semantic_windows, source_semantics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _frames(models, device: str, dtype: str) -> np.ndarray:
    animator = models.animator(256, "crop", device, dtype)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    source = rng.normal(size=73).astype(np.float32)
    coeffs = (source[None, :70] + 0.1 * rng.normal(size=(2, 70))).astype(np.float32)
    animator.set_source(source_image_array(image), source_semantics(source, animator.coeff_nc))
    with animator.inference_context():
        windows = torch.from_numpy(semantic_windows(coeffs)).to(animator.device)
        _, kp = animator.driving_keypoints(windows)
        frames = animator.render(kp).float().cpu().numpy()
    animator.clear_source()
    return frames


def test_cuda_float32_matches_cpu(models):
    cpu = _frames(models, "cpu", "float32")
    gpu = _frames(models, "cuda", "float32")
    assert np.abs(cpu - gpu).max() < 1e-3


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_precision_is_close(models, dtype):
    gpu32 = _frames(models, "cuda", "float32")
    half = _frames(models, "cuda", dtype)
    assert np.isfinite(half).all()
    assert np.abs(gpu32 - half).mean() < 0.02
