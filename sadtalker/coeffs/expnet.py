"""ExpNet: audio -> 64 expression coefficients (SadTalker §3.1; reference ``SimpleWrapperV2``,
src/audio2exp_models/networks.py)."""

from __future__ import annotations

import torch
from torch import nn

from sadtalker.coeffs.audio_encoder import mel_encoder_layers

EXPRESSION_DIM = 64


class ExpNet(nn.Module):
    """Mel window + reference expression beta0 + blink ratio -> expression, per frame independently."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = mel_encoder_layers()
        self.mapping1 = nn.Linear(512 + EXPRESSION_DIM + 1, EXPRESSION_DIM)

    def forward(self, mels: torch.Tensor, reference: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mels: ``(N, 1, 80, 16)`` mel windows.
            reference: ``(N, 64)`` reference expression beta0 per frame.
            blink: ``(N, 1)`` eye-closure ratio.

        Returns:
            ``(N, 64)`` expression coefficients (used as they are: no residual on beta0).
        """
        audio = self.audio_encoder(mels).flatten(1)  # (N, 512, 1, 1) -> (N, 512)
        return self.mapping1(torch.cat([audio, reference, blink], dim=1))
