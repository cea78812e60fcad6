"""Canonical 3-D keypoint detector (SadTalker §3.3 face render; face-vid2vid "canonical keypoint detector L").

The source image is blurred and downsampled by 4, a 2-D → 3-D hourglass predicts one volumetric heatmap per
keypoint, and each keypoint is the expected ``(x, y, z)`` coordinate under its softmax heatmap
(temperature 0.1). No Jacobians (``estimate_jacobian: False`` in the official config).
Checkpoint prefix: ``kp_extractor.`` (safetensors) or ``kp_detector/`` (legacy facevid2vid file).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.render.blocks import AntiAliasDownsample, KPHourglass, make_coordinate_grid


@dataclass(frozen=True)
class KPDetectorConfig:
    """``kp_detector_params`` + ``common_params`` of facerender.yaml."""

    block_expansion: int = 32
    num_kp: int = 15
    image_channel: int = 3
    max_features: int = 1024
    reshape_channel: int = 16384
    reshape_depth: int = 16
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25


class KPDetector(nn.Module):
    """Source image → canonical keypoints.

    Args: ``image`` ``(B, 3, S, S)`` RGB in [0, 1], ``S`` divisible by ``4 · 2**num_blocks`` (128 or more).
    Returns ``(B, num_kp, 3)`` keypoints ``(x, y, z)`` in [-1, 1].
    """

    def __init__(self, config: KPDetectorConfig | None = None):
        super().__init__()
        cfg = config or KPDetectorConfig()
        self.config = cfg
        self.predictor = KPHourglass(
            cfg.block_expansion,
            in_features=cfg.image_channel,
            reshape_features=cfg.reshape_channel,
            reshape_depth=cfg.reshape_depth,
            num_blocks=cfg.num_blocks,
            max_features=cfg.max_features,
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, cfg.num_kp, kernel_size=3, padding=1)
        self.down = (
            AntiAliasDownsample(cfg.image_channel, cfg.scale_factor) if cfg.scale_factor != 1 else None
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.down(image) if self.down is not None else image  # (B, 3, 256, 256) -> (B, 3, 64, 64)
        feature = self.predictor(x)  # -> (B, 32, 16, 64, 64)
        prediction = self.kp(feature)  # -> (B, 15, 16, 64, 64)
        b, k, d, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(b, k, -1) / self.config.temperature, dim=2)
        heatmap = heatmap.view(b, k, d, h, w, 1)  # -> (B, 15, 16, 64, 64, 1)
        grid = make_coordinate_grid(d, h, w, heatmap.dtype, heatmap.device)  # (16, 64, 64, 3)
        # Expected coordinate. A broadcast sum rather than a matmul: same summation order as the reference
        # (bit-identical keypoints; a matmul differs by ~2e-6, which the warps amplify ~60x in the frames).
        return (heatmap * grid).sum(dim=(2, 3, 4))  # -> (B, 15, 3)
