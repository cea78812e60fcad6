"""Building blocks of the face-vid2vid renderer used by SadTalker (§3.3 "FaceRender", after Wang et al. 2021).

2-D/3-D conv blocks, the hourglasses of the keypoint detector and of the dense motion network, the
anti-aliased downsampler and the normalised coordinate grid. Attribute names are the checkpoint keys
(``conv``, ``norm``, ``down_blocks``, ``up_blocks`` ...). Every norm is a plain ``nn.BatchNorm2d/3d``
(the reference's synchronized BN is identical in eval mode), used with its running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(
    depth: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Normalised voxel coordinates, endpoints included: ``(D, H, W, 3)`` holding ``(x, y, z)``.

    ``x_w = 2 * (w / (W - 1)) - 1`` (same for y over H and z over D), computed in that order so that the
    values equal the reference's bit for bit.
    """

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, device=device).to(dtype) / (n - 1)) - 1

    x = axis(width).view(1, 1, width).expand(depth, height, width)
    y = axis(height).view(1, height, 1).expand(depth, height, width)
    z = axis(depth).view(depth, 1, 1).expand(depth, height, width)
    return torch.stack([x, y, z], dim=-1)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then keep every ``1/scale``-th pixel (band-limited downsampling).

    The depthwise kernel is the persistent buffer ``weight`` ``(C, 1, k, k)`` (σ = (1/scale - 1)/2,
    k = 2·round(4σ) + 1, normalised to sum 1); the official checkpoint stores it, so it is loaded, not
    trusted to the constructor. Zero padding of k//2 on each side; stride ``1/scale`` picks the pixels
    ``0, s, 2s, ...`` exactly like blurring at full resolution and slicing ``[::s]``.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        if size % 2 == 0:
            raise ValueError(f"scale {scale} gives an even kernel size {size}")
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.channels = channels
        self.stride = int(1 / scale)
        self.padding = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s))``."""
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding, groups=self.channels)


class SameBlock2d(nn.Module):
    """Conv → BN → ReLU (or LeakyReLU(0.01) with ``lrelu=True``), resolution preserved."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac: nn.Module = nn.LeakyReLU(0.01) if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv3×3 → BN → ReLU → AvgPool 2×2: ``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """Conv3d 3³ → BN → ReLU → AvgPool (1, 2, 2): ``(B, Cin, D, H, W) -> (B, Cout, D, H/2, W/2)``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest ×(1, 2, 2) → Conv3d 3³ → BN → ReLU: ``(B, Cin, D, H, W) -> (B, Cout, D, 2H, 2W)``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x)))))), shape preserved."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1×1 → 3×3/stride → 1×1, BN, ReLU) with a 1×1 strided skip when stride > 1."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.norm3 = nn.BatchNorm2d(in_features)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


def _hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after ``level`` halvings: ``min(max_features, block_expansion * 2**level)``."""
    return min(max_features, block_expansion * (2**level))


class KPHourglass(nn.Module):
    """2-D encoder → 1×1 conv → reshape to 3-D → 3-D decoder, no skips (the keypoint detector's trunk).

    ``(B, Cin, H, W) -> (B, block_expansion, reshape_depth, H, W)``; ``H, W`` divisible by ``2**num_blocks``.
    """

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        reshape_features: int,
        reshape_depth: int,
        num_blocks: int,
        max_features: int,
    ):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            cin = in_features if i == 0 else _hourglass_channels(block_expansion, max_features, i)
            cout = _hourglass_channels(block_expansion, max_features, i + 1)
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
        bottom = _hourglass_channels(block_expansion, max_features, num_blocks)
        self.conv = nn.Conv2d(bottom, reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            cin = _hourglass_channels(block_expansion, max_features, num_blocks - i)
            cout = _hourglass_channels(block_expansion, max_features, num_blocks - i - 1)
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
        self.reshape_depth = reshape_depth
        self.out_filters = _hourglass_channels(block_expansion, max_features, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down_blocks(x)  # (B, 3, 64, 64) -> (B, 1024, 2, 2)
        out = self.conv(out)  # (B, 1024, 2, 2) -> (B, 16384, 2, 2)
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)  # -> (B, 1024, 16, 2, 2)
        return self.up_blocks(out)  # -> (B, 32, 16, 64, 64)


class HourglassEncoder(nn.Module):
    """3-D encoder; returns the input and every level's output (the skips), finest first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_features if i == 0 else _hourglass_channels(block_expansion, max_features, i),
                _hourglass_channels(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """3-D decoder with skip concatenation ``[upsampled, skip]``, then Conv3d 3³ → BN → ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            factor = 1 if i == num_blocks - 1 else 2  # deeper levels receive [up, skip]
            blocks.append(
                UpBlock3d(
                    factor * _hourglass_channels(block_expansion, max_features, i + 1),
                    _hourglass_channels(block_expansion, max_features, i),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """U-Net style 3-D hourglass: ``(B, Cin, D, H, W) -> (B, block_expansion + Cin, D, H, W)``."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
