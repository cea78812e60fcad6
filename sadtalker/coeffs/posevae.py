"""PoseVAE: audio + pose style -> head-pose motion (SadTalker §3.2; reference ``Audio2Pose``,
src/audio2pose_models/audio2pose.py).

Only the conditional decoder runs at inference. The encoder and the motion discriminator are defined
because the official checkpoint holds them and loading is strict; they have no forward here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sadtalker.coeffs.audio_encoder import AudioEncoder
from sadtalker.coeffs.res_unet import ResUnet


@dataclass(frozen=True)
class PoseVAEConfig:
    """src/config/auido2pose.yaml."""

    seq_len: int = 32
    latent_size: int = 64
    num_classes: int = 46
    audio_emb_in: int = 512
    audio_emb_out: int = 6
    encoder_layers: tuple[int, ...] = (192, 128)
    decoder_layers: tuple[int, ...] = (128, 192)
    pose_dim: int = 6


class PoseEncoder(nn.Module):
    """Training-time CVAE encoder (unused at inference; keys only)."""

    def __init__(self, cfg: PoseVAEConfig):
        super().__init__()
        self.resunet = ResUnet()
        sizes = (cfg.encoder_layers[0] + cfg.latent_size + cfg.seq_len * cfg.audio_emb_out + cfg.pose_dim,)
        sizes += cfg.encoder_layers[1:]
        self.MLP = nn.Sequential()
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            self.MLP.add_module(f"A{i}", nn.ReLU())
        self.linear_means = nn.Linear(sizes[-1], cfg.latent_size)
        self.linear_logvar = nn.Linear(sizes[-1], cfg.latent_size)
        self.linear_audio = nn.Linear(cfg.audio_emb_in, cfg.audio_emb_out)
        self.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))


class PoseDecoder(nn.Module):
    """CVAE decoder: (reference pose, z + class bias, audio) -> 32 frames of pose motion."""

    def __init__(self, cfg: PoseVAEConfig):
        super().__init__()
        self.seq_len = cfg.seq_len
        self.resunet = ResUnet()
        sizes = (cfg.latent_size + cfg.seq_len * cfg.audio_emb_out + cfg.pose_dim, *cfg.decoder_layers)
        self.MLP = nn.Sequential()
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            last = i + 2 == len(sizes)
            self.MLP.add_module("sigmoid" if last else f"A{i}", nn.Sigmoid() if last else nn.ReLU())
        self.pose_linear = nn.Linear(cfg.pose_dim, cfg.pose_dim)
        self.linear_audio = nn.Linear(cfg.audio_emb_in, cfg.audio_emb_out)
        self.classbias = nn.Parameter(torch.zeros(cfg.num_classes, cfg.latent_size))

    def forward(
        self, z: torch.Tensor, style: torch.Tensor, reference_pose: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            z: ``(B, 64)`` latent noise.
            style: ``(B,)`` pose-style class ids in [0, 46).
            reference_pose: ``(B, 6)`` first-frame angles + translation.
            audio: ``(B, 32, 512)`` audio embeddings of the chunk.

        Returns:
            ``(B, 32, 6)`` pose motion relative to the first frame.
        """
        batch = z.shape[0]
        audio_out = self.linear_audio(audio).reshape(batch, -1)  # (B, 32, 6) -> (B, 192)
        latent = z + self.classbias[style]
        x = self.MLP(torch.cat([reference_pose, latent, audio_out], dim=-1))  # (B, 262) -> (B, 192)
        x = self.resunet(x.reshape(batch, 1, self.seq_len, -1))  # (B, 1, 32, 6)
        return self.pose_linear(x.squeeze(1))  # (B, 32, 6)


class CVAE(nn.Module):
    def __init__(self, cfg: PoseVAEConfig):
        super().__init__()
        self.encoder = PoseEncoder(cfg)
        self.decoder = PoseDecoder(cfg)


class ConvNormRelu(nn.Module):
    """Conv1d (no bias) -> BatchNorm1d -> ReLU; keys ``conv``, ``norm``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class PoseSequenceDiscriminator(nn.Module):
    """Training-time motion discriminator (unused at inference; keys only)."""

    def __init__(self, cfg: PoseVAEConfig):
        super().__init__()
        self.seq = nn.Sequential(
            ConvNormRelu(cfg.pose_dim, 256, 4, 2, 1),
            ConvNormRelu(256, 512, 4, 2, 1),
            ConvNormRelu(512, 1024, 3, 1, 1),
            nn.Conv1d(1024, 1, kernel_size=3, stride=1, padding=1, bias=True),
        )


class Audio2Pose(nn.Module):
    """The whole PoseVAE as stored under ``audio2pose.``: ``audio_encoder``, ``netG``, ``netD_motion``."""

    def __init__(self, cfg: PoseVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or PoseVAEConfig()
        self.audio_encoder = AudioEncoder()
        self.netG = CVAE(self.cfg)
        self.netD_motion = PoseSequenceDiscriminator(self.cfg)

    def num_draws(self, frames: int) -> int:
        """How many 64-d latent draws :meth:`generate` needs for ``frames`` video frames."""
        rest = frames - 1
        return rest // self.cfg.seq_len + (1 if rest % self.cfg.seq_len else 0)

    def generate(self, mels, reference_pose: torch.Tensor, style: int, z: torch.Tensor) -> torch.Tensor:
        """Pose for every frame: the reference pose plus decoded motion, chunked by 32 frames
        (official ``Audio2Pose.test``).

        Args:
            mels: ``(T, 80, 16)`` mel windows: an array, or anything sliceable like one
                (:class:`sadtalker.audio.mel.MelWindows`); only 32 frames are turned into a tensor at a time.
            reference_pose: ``(6,)`` source angles + translation (frame 0).
            style: pose style in [0, 46).
            z: ``(num_draws(T), 64)`` latent noise, in call order (full chunks first, the remainder last).

        Returns:
            ``(T, 6)`` raw (unsmoothed) pose.
        """
        seq = self.cfg.seq_len
        frames = mels.shape[0]
        if z.shape[0] != self.num_draws(frames):
            raise ValueError(
                f"expected {self.num_draws(frames)} latent draws for {frames} frames, got {z.shape[0]}"
            )
        decoder = self.netG.decoder
        device, dtype = reference_pose.device, reference_pose.dtype
        style_ids = torch.tensor([style], device=device)
        ref = reference_pose.reshape(1, -1)

        def encode(first: int, last: int) -> torch.Tensor:
            chunk = torch.as_tensor(np.asarray(mels[first:last]), device=device, dtype=dtype)
            return self.audio_encoder(chunk[None, :, None])  # (1, n, 1, 80, 16) -> (1, n, 512)

        motions = [torch.zeros(1, reference_pose.numel(), dtype=dtype, device=device)]  # frame 0: no motion
        full, remainder = divmod(frames - 1, seq)
        for k in range(full):  # frames 1 + 32k .. 32 + 32k
            motions.append(decoder(z[k : k + 1], style_ids, ref, encode(1 + k * seq, 1 + (k + 1) * seq))[0])
        if remainder:  # the last (up to) 32 frames again, with a fresh draw; keep the last `remainder` rows
            audio = encode(max(1, frames - seq), frames)
            if audio.shape[1] < seq:  # fewer than 32 frames in all: left-pad with the first embedding
                audio = torch.cat([audio[:, :1].expand(1, seq - audio.shape[1], -1), audio], dim=1)
            motions.append(decoder(z[full : full + 1], style_ids, ref, audio)[0, -remainder:])
        return ref + torch.cat(motions, dim=0)
