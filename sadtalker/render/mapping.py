"""MappingNet (SadTalker §3.3 "face render": 3DMM coefficients → head pose and keypoint deformation).

Maps a 27-frame window of 3DMM coefficients (expression 64 + pose 6, plus 3 crop parameters in the
``full`` modes) to the face-vid2vid motion parameters: yaw/pitch/roll as 66-bin logits, a translation and
per-keypoint expression offsets. Weights come from ``mapping_00229-model.pth.tar`` (70 inputs) or
``mapping_00109-model.pth.tar`` (73 inputs), top-level entry ``mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class MappingConfig:
    """``mapping_params`` of facerender.yaml (coeff_nc 70) / facerender_still.yaml (73)."""

    coeff_nc: Literal[70, 73] = 70
    descriptor_nc: int = 1024
    layer: int = 3
    num_kp: int = 15
    num_bins: int = 66


class MappingOutput(NamedTuple):
    """Head motion predicted by MappingNet for a batch of B windows.

    ``yaw``, ``pitch``, ``roll``: ``(B, num_bins)`` bin logits (degrees = softmax · bin index · 3 − 99);
    ``t``: ``(B, 3)`` translation (only ``t[:, 1]`` is used); ``exp``: ``(B, 3·num_kp)`` keypoint offsets.
    """

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


class MappingNet(nn.Module):
    """Conv1d over time (kernel 7), 3 dilated residual Conv1d (LeakyReLU 0.1), mean-pool, 5 linear heads.

    Args: ``coeffs`` ``(B, coeff_nc, 27)``. Returns :class:`MappingOutput`.
    """

    def __init__(self, config: MappingConfig | None = None):
        super().__init__()
        cfg = config or MappingConfig()
        if cfg.coeff_nc not in (70, 73):
            raise ValueError(
                f"coeff_nc must be 70 (crop/resize modes) or 73 (full modes), got {cfg.coeff_nc}"
            )
        self.config = cfg
        nc = cfg.descriptor_nc
        self.first = nn.Sequential(nn.Conv1d(cfg.coeff_nc, nc, kernel_size=7))
        for i in range(cfg.layer):
            self.add_module(f"encoder{i}", nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(nc, nc, 3, dilation=3)))
        # Head registration order = checkpoint order (roll, pitch, yaw).
        self.fc_roll = nn.Linear(nc, cfg.num_bins)
        self.fc_pitch = nn.Linear(nc, cfg.num_bins)
        self.fc_yaw = nn.Linear(nc, cfg.num_bins)
        self.fc_t = nn.Linear(nc, 3)
        self.fc_exp = nn.Linear(nc, 3 * cfg.num_kp)

    def forward(self, coeffs: torch.Tensor) -> MappingOutput:
        out = self.first(coeffs)  # (B, 70, 27) -> (B, 1024, 21)
        for i in range(self.config.layer):
            out = (
                getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
            )  # length -6 per layer: 21 -> 15 -> 9 -> 3
        out = out.mean(dim=2)  # (B, 1024, 3) -> (B, 1024)
        return MappingOutput(
            yaw=self.fc_yaw(out),
            pitch=self.fc_pitch(out),
            roll=self.fc_roll(out),
            t=self.fc_t(out),
            exp=self.fc_exp(out),
        )
