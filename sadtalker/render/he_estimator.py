"""Head pose and expression estimator (face-vid2vid "H"; present in SadTalker's legacy checkpoint only).

SadTalker never calls it at inference (MappingNet replaces it; the official ``make_animation`` has its
only call commented out): it exists so that the legacy ``facevid2vid_00189-model.pth.tar`` layout
(``he_estimator/*``) can be derived and loaded strictly. The forward is implemented for completeness and
keeps the swapped heads of the official ``HEEstimator.forward`` (src/facerender/modules/keypoint_detector.py):
the ``fc_roll`` head is returned as yaw and ``fc_yaw`` as roll.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.render.blocks import ResBottleneck
from sadtalker.render.mapping import MappingOutput


@dataclass(frozen=True)
class HEEstimatorConfig:
    """``he_estimator_params`` + common_params of facerender.yaml (``max_features`` is unused there too)."""

    block_expansion: int = 64
    num_kp: int = 15
    image_channel: int = 3
    num_bins: int = 66


def _stack(prefix: str, features: int, count: int) -> nn.Sequential:
    stack = nn.Sequential()
    for i in range(count):
        stack.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
    return stack


class HEEstimator(nn.Module):
    """ResNet-like 2-D net → yaw/pitch/roll bins, translation, expression offsets.

    Args: ``image`` ``(B, 3, S, S)``. Returns :class:`~sadtalker.render.mapping.MappingOutput`.
    """

    def __init__(self, config: HEEstimatorConfig | None = None):
        super().__init__()
        cfg = config or HEEstimatorConfig()
        self.conv1 = nn.Conv2d(cfg.image_channel, cfg.block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(cfg.block_expansion)
        self.conv2 = nn.Conv2d(cfg.block_expansion, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256)
        self.block1 = _stack("b1", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = _stack("b3", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = _stack("b5", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(2048)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = _stack("b7", 2048, 2)
        self.fc_roll = nn.Linear(2048, cfg.num_bins)
        self.fc_pitch = nn.Linear(2048, cfg.num_bins)
        self.fc_yaw = nn.Linear(2048, cfg.num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * cfg.num_kp)

    def forward(self, image: torch.Tensor) -> MappingOutput:
        out = F.relu(self.norm1(self.conv1(image)))  # (B, 3, 256, 256) -> (B, 64, 128, 128)
        out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)  # -> (B, 64, 64, 64)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))  # -> (B, 256, 64, 64)
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))  # -> (B, 512, 32, 32)
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))  # -> (B, 1024, 16, 16)
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))  # -> (B, 2048, 8, 8)
        out = out.mean(dim=(2, 3))  # -> (B, 2048)
        return MappingOutput(
            yaw=self.fc_roll(out),  # swapped heads, as in the reference
            pitch=self.fc_pitch(out),
            roll=self.fc_yaw(out),
            t=self.fc_t(out),
            exp=self.fc_exp(out),
        )
