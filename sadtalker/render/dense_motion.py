"""Dense motion network (SadTalker §3.3 face render; face-vid2vid "motion field estimator M").

From the source's 3-D feature volume and the source/driving keypoints it predicts a dense 3-D flow
(a softmax-weighted mix of 16 candidate warps: identity + one per keypoint) and a 2-D occlusion map.
The source-only part (compressing the feature volume to 4 channels) is split out in :meth:`compress_source`
so the renderer can compute it once per clip.

Reproduced from the official ``DenseMotionNetwork`` (src/facerender/modules/dense_motion.py):
``grid_sample`` with ``align_corners=False`` over an endpoint-inclusive coordinate grid (a half-voxel
offset), and mask weights below 1e-3 zeroed without renormalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.render.blocks import Hourglass, make_coordinate_grid

KP_VARIANCE = 0.01
"""Variance of the Gaussian keypoint heatmaps."""

MASK_FLOOR = 1e-3
"""Motion-mask weights below this are set to 0 (no renormalisation)."""


@dataclass(frozen=True)
class DenseMotionConfig:
    """``dense_motion_params`` of facerender.yaml (+ ``num_kp``/``feature_channel`` from common_params)."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    num_kp: int = 15
    feature_channel: int = 32
    estimate_occlusion_map: bool = True


class DenseMotion(NamedTuple):
    """Output for B frames (``h = w = S/4``, ``D = 16``).

    ``deformation``: ``(B, D, h, w, 3)`` sampling grid (x, y, z) into the source volume;
    ``occlusion_map``: ``(B, 1, h, w)`` in (0, 1), or None without an occlusion head;
    ``mask``: ``(B, num_kp + 1, D, h, w)`` softmax weights of the candidate warps (before the 1e-3 floor).
    """

    deformation: torch.Tensor
    occlusion_map: torch.Tensor | None
    mask: torch.Tensor


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``exp(-0.5 · |grid - kp|² / 0.01)``: ``(B, K, 3)``, grid ``(D, H, W, 3)`` → ``(B, K, D, H, W)``."""
    diff = grid.unsqueeze(0).unsqueeze(0) - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Sparse keypoint motion → dense 3-D deformation + occlusion.

    Args: ``compressed`` ``(1 or B, compress, D, h, w)`` from :meth:`compress_source`; ``kp_source``,
    ``kp_driving`` ``(1 or B, K, 3)`` (batch 1 is broadcast). Returns :class:`DenseMotion`.
    """

    def __init__(self, config: DenseMotionConfig | None = None):
        super().__init__()
        cfg = config or DenseMotionConfig()
        self.config = cfg
        self.num_kp = cfg.num_kp
        # Registration order = checkpoint order: hourglass, mask, compress, norm, occlusion.
        self.hourglass = Hourglass(
            cfg.block_expansion,
            in_features=(cfg.num_kp + 1) * (cfg.compress + 1),
            num_blocks=cfg.num_blocks,
            max_features=cfg.max_features,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, cfg.num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(cfg.feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * cfg.reshape_depth, 1, kernel_size=7, padding=3)
            if cfg.estimate_occlusion_map
            else None
        )

    def compress_source(self, feature_3d: torch.Tensor) -> torch.Tensor:
        """Source-only part: ``(B, 32, D, h, w) -> (B, 4, D, h, w)`` (1×1×1 conv → BN → ReLU)."""
        return F.relu(self.norm(self.compress(feature_3d)))

    def forward(
        self, compressed: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> DenseMotion:
        batch = max(compressed.shape[0], kp_source.shape[0], kp_driving.shape[0])
        _, c, d, h, w = compressed.shape
        slots = self.num_kp + 1
        kp_source = kp_source.expand(batch, -1, -1)
        kp_driving = kp_driving.expand(batch, -1, -1)
        grid = make_coordinate_grid(d, h, w, compressed.dtype, compressed.device)  # (D, h, w, 3)

        # Candidate warps: slot 0 = identity (background), slot k = grid - kp_driving[k] + kp_source[k].
        identity = grid.expand(batch, 1, d, h, w, 3)
        to_source = grid - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        sparse_motion = torch.cat([identity, to_source], dim=1)  # (B, 16, D, h, w, 3)

        # Source features warped by each candidate: one grid_sample over B·16 volumes.
        volumes = compressed.expand(batch, c, d, h, w).unsqueeze(1).expand(batch, slots, c, d, h, w)
        deformed = F.grid_sample(
            volumes.reshape(batch * slots, c, d, h, w),
            sparse_motion.view(batch * slots, d, h, w, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        ).view(batch, slots, c, d, h, w)  # (B, 16, 4, D, h, w)

        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)  # (B, 15, D, h, w)
        heat = torch.cat([heat.new_zeros(batch, 1, d, h, w), heat], dim=1).unsqueeze(2)  # (B, 16, 1, D, h, w)
        hourglass_in = torch.cat([heat, deformed], dim=2).view(batch, -1, d, h, w)  # -> (B, 80, D, h, w)

        prediction = self.hourglass(hourglass_in)  # -> (B, 112, D, h, w)
        mask = F.softmax(self.mask(prediction), dim=1)  # -> (B, 16, D, h, w)
        floored = torch.where(mask < MASK_FLOOR, torch.zeros_like(mask), mask)
        deformation = (sparse_motion * floored.unsqueeze(-1)).sum(dim=1)  # -> (B, D, h, w, 3)

        occlusion_map = None
        if self.occlusion is not None:
            flat = prediction.reshape(batch, -1, h, w)  # (B, 112·16, h, w), channel = 16·c + d
            occlusion_map = torch.sigmoid(self.occlusion(flat))  # -> (B, 1, h, w)
        return DenseMotion(deformation, occlusion_map, mask)
