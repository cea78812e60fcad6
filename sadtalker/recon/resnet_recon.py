"""3DMM coefficient regressor: ReconNet, Deep3DFaceRecon's ``ReconNetWrapper('resnet50', use_last_fc=False)``
as used by SadTalker (src/face3d/models/networks.py).

A torchvision-layout ResNet-50 v1.5 backbone (stride in the 3×3 conv of each bottleneck, no fc) followed by
seven 1×1 conv heads whose outputs are concatenated into the 257 Deep3DFaceRecon coefficients
(id 80, exp 64, tex 80, angle 3, gamma 27, trans 2 + 1).

Attribute names are the checkpoint keys after the ``face_3drecon.`` prefix (safetensors) or ``net_recon/``
(legacy ``epoch_20.pth``): ``backbone.conv1.weight``, ``backbone.layer1.0.downsample.0.weight``, ...,
``final_layers.0.weight`` ... ``final_layers.6.bias``. Input: RGB in [0, 1], no mean/std normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ReconNetConfig:
    """Official configuration: ResNet-50 blocks and the seven head widths (sum 257)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    head_dims: tuple[int, ...] = (80, 64, 80, 3, 27, 2, 1)  # id, exp, tex, angle, gamma, (tx, ty), tz

    @property
    def out_dim(self) -> int:
        return sum(self.head_dims)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1×1 → 3×3 (stride) → 1×1 ×4, BatchNorm after each, residual + ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))  # spatial stride here (v1.5)
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNetBackbone(nn.Module):
    """torchvision ResNet-50 feature extractor without ``fc``: (B, 3, H, W) -> (B, 2048, 1, 1)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 3, 224, 224) -> (B, 64, 56, 56)
        x = self.layer1(x)  # -> (B, 256, 56, 56)
        x = self.layer2(x)  # -> (B, 512, 28, 28)
        x = self.layer3(x)  # -> (B, 1024, 14, 14)
        x = self.layer4(x)  # -> (B, 2048, 7, 7)
        return self.avgpool(x)  # -> (B, 2048, 1, 1)


class ReconNet(nn.Module):
    """Deep3DFaceRecon ReconNetWrapper (resnet50, no last fc): aligned face -> 257 3DMM coefficients."""

    def __init__(self, config: ReconNetConfig | None = None):
        super().__init__()
        self.config = config or ReconNetConfig()
        self.backbone = ResNetBackbone(self.config.layers)
        width = self.backbone.out_channels
        self.final_layers = nn.ModuleList(
            nn.Conv2d(width, dim, kernel_size=1, bias=True) for dim in self.config.head_dims
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image: (B, 3, 224, 224) float32 RGB in [0, 1] (pixel / 255).

        Returns:
            (B, 257): id [0, 80), exp [80, 144), tex [144, 224), angle [224, 227), gamma [227, 254),
            trans [254, 257).
        """
        features = self.backbone(image)  # (B, 2048, 1, 1)
        heads = [layer(features) for layer in self.final_layers]  # 7 × (B, d, 1, 1)
        return torch.flatten(torch.cat(heads, dim=1), 1)  # (B, 257)
