"""The Wav2Lip-style mel encoder shared (with separate weights) by ExpNet and PoseVAE.

Official counterparts: ``SimpleWrapperV2.audio_encoder`` (src/audio2exp_models/networks.py) and
``AudioEncoder`` (src/audio2pose_models/audio_encoder.py).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d -> BatchNorm2d -> (+ input) -> ReLU. Keys: ``conv_block.0`` (conv), ``conv_block.1`` (BN)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)  # also after the last block, as the official code


def mel_encoder_layers() -> nn.Sequential:
    """The 13 blocks: ``(N, 1, 80, 16) -> (N, 512, 1, 1)``. Strides are (mel axis, time axis)."""
    return nn.Sequential(
        ConvBlock(1, 32, 3, 1, 1),  # (N, 32, 80, 16)
        ConvBlock(32, 32, 3, 1, 1, residual=True),
        ConvBlock(32, 32, 3, 1, 1, residual=True),
        ConvBlock(32, 64, 3, (3, 1), 1),  # (N, 64, 27, 16)
        ConvBlock(64, 64, 3, 1, 1, residual=True),
        ConvBlock(64, 64, 3, 1, 1, residual=True),
        ConvBlock(64, 128, 3, 3, 1),  # (N, 128, 9, 6)
        ConvBlock(128, 128, 3, 1, 1, residual=True),
        ConvBlock(128, 128, 3, 1, 1, residual=True),
        ConvBlock(128, 256, 3, (3, 2), 1),  # (N, 256, 3, 3)
        ConvBlock(256, 256, 3, 1, 1, residual=True),
        ConvBlock(256, 512, 3, 1, 0),  # (N, 512, 1, 1)
        ConvBlock(512, 512, 1, 1, 0),
    )


class AudioEncoder(nn.Module):
    """PoseVAE's audio encoder: per-frame mel windows to 512-d embeddings (key prefix ``audio_encoder.``)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = mel_encoder_layers()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """``(B, n, 1, 80, 16) -> (B, n, 512)``."""
        batch, steps = mels.shape[:2]
        embedding = self.audio_encoder(mels.reshape(batch * steps, *mels.shape[2:]))  # (B*n, 512, 1, 1)
        return embedding.reshape(batch, steps, -1)
