"""ResUnet over a (time x pose) map, used inside PoseVAE's decoder and encoder (official
src/audio2pose_models/res_unet.py)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualConv(nn.Module):
    """Pre-activation residual block; keys ``conv_block.{0,2,3,5}`` and ``conv_skip.{0,1}``."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int]):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, kernel_size=3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """Transposed conv doubling the time axis; key ``upsample``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """``(B, 1, 32, 6) -> (B, 1, 32, 6)`` in (0, 1); filters 32, 64, 128, 256; halves/doubles time only."""

    def __init__(self, filters: tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f0, kernel_size=3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, kernel_size=3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(1, f0, kernel_size=3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1))
        self.bridge = ResidualConv(f2, f3, stride=(2, 1))
        self.upsample_1 = Upsample(f3, f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, stride=1)
        self.upsample_2 = Upsample(f2, f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, stride=1)
        self.upsample_3 = Upsample(f1, f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, stride=1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)  # (B, 32, 32, 6)
        x2 = self.residual_conv_1(x1)  # (B, 64, 16, 6)
        x3 = self.residual_conv_2(x2)  # (B, 128, 8, 6)
        x4 = self.upsample_1(self.bridge(x3))  # (B, 256, 4, 6) -> (B, 256, 8, 6)
        x6 = self.upsample_2(self.up_residual_conv1(torch.cat([x4, x3], dim=1)))  # (B, 128, 16, 6)
        x8 = self.upsample_3(self.up_residual_conv2(torch.cat([x6, x2], dim=1)))  # (B, 64, 32, 6)
        x10 = self.up_residual_conv3(torch.cat([x8, x1], dim=1))  # (B, 32, 32, 6)
        return self.output_layer(x10)  # (B, 1, 32, 6)
