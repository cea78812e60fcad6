"""GFPGAN v1.4 face restorer: the "clean" architecture (no compiled CUDA ops), reimplemented.

What the published network is (read from TencentARC/GFPGAN ``gfpgan/archs/gfpganv1_clean_arch.py``,
``gfpgan/archs/stylegan2_clean_arch.py`` and ``gfpgan/utils.py``; Wang et al., "Towards Real-World Blind Face
Restoration with Generative Facial Prior", CVPR 2021), and what :class:`GFPGANv1Clean` rebuilds:

* **U-Net encoder** at half the decoder's width: a 1x1 ``conv_body_first`` (3 -> C(512)), seven down
  :class:`ResBlock` s 512 -> 4 px (3x3 conv, leaky ReLU 0.2, bilinear x0.5, 3x3 conv, leaky ReLU; plus a
  bilinear x0.5 then 1x1 bias-free skip conv), a 3x3 ``final_conv`` and ``final_linear`` from the 4x4
  features to one 512-d latent per decoder layer (``different_w``: 16 latents at 512 px).
* **Up path**: the features plus the down path's skip, seven up :class:`ResBlock` s 4 -> 512 px; at each scale
  ``condition_scale`` / ``condition_shift`` (3x3 conv, leaky ReLU 0.2, 3x3 conv) give the SFT scale and
  shift; ``toRGB`` (1x1 convs) are intermediate images used in training only.
* **Decoder**: a StyleGAN2 generator (``stylegan_decoder``: constant 4x4 input, modulated/demodulated 3x3
  convs with noise injection, ``to_rgb`` skips upsampled bilinearly) whose latents are the encoder's
  (``input_is_latent``: its 8-layer ``style_mlp`` is stored but not run). After the first conv of each scale,
  half of the channels (``sft_half``) become ``x * scale + shift``.
* **Inference** (``GFPGANer.enhance(..., has_aligned=True)``): the aligned face is resized to 512 x 512
  (``cv2.resize``, bilinear), RGB, ``(x / 255 - 0.5) / 0.5``; the output image is clamped to [-1, 1] and
  mapped back by ``round((y + 1) / 2 * 255)`` (basicsr ``tensor2img``). The ``weight`` argument of
  ``enhance`` is ignored by this architecture.

Deviations, all on purpose:

* **Noise**: the official inference draws fresh Gaussian noise for every StyleGAN layer on every call
  (``randomize_noise=True``), so its output is random. Here the noise maps stored in the checkpoint
  (``stylegan_decoder.noises.noise<i>``, what the official code uses with ``randomize_noise=False``) are
  used: one frame always gives one output, and a batch gives what its frames give one by one.
* **Modulated convolution** is computed as ``conv(x * style, w) * demod`` with the shared weight instead of a
  grouped convolution with per-sample weights: the same function (equal up to float32 rounding), and it
  batches well.

The checkpoint ``GFPGANv1.4.pth`` is a torch pickle ``{"params_ema": state_dict}``; its flat keys here are
``params_ema/<state_dict key>`` (:func:`sadtalker.weights.loading.load_checkpoint`), and the attribute names
of these modules are the state dict keys. Loading is strict, through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.atomic import atomic_path
from sadtalker.errors import WeightsError

__all__ = [
    "GFPGANConfig",
    "GFPGANv1Clean",
    "GFPGAN_PREFIX",
    "V14",
    "gfpgan_layout",
    "gfpgan_state_from_checkpoint",
    "layout_tsv",
    "load_gfpgan",
    "synthetic_gfpgan_state",
    "write_synthetic_gfpgan",
]

#: Where the network sits in the file's flat key space (a pickle ``{"params_ema": state_dict}``).
GFPGAN_PREFIX = "params_ema/"
_SLOPE = 0.2


@dataclass(frozen=True)
class GFPGANConfig:
    """Hyper-parameters of ``GFPGANv1Clean`` (defaults: v1.4 as ``GFPGANer(arch="clean")`` builds it).

    ``narrow`` scales every channel count (the encoder uses half of it); smaller values and ``out_size``
    give cheap networks of the same structure for tests.
    """

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    narrow: float = 1.0
    num_mlp: int = 8
    different_w: bool = True
    sft_half: bool = True
    input_is_latent: bool = True

    def __post_init__(self) -> None:
        log_size = int(math.log2(self.out_size))
        if self.out_size < 8 or 2**log_size != self.out_size:
            raise ValueError(f"out_size must be a power of two >= 8, got {self.out_size}")
        if not self.sft_half:
            return
        for res in range(3, log_size + 1):  # SFT on half of the decoder's channels needs exact halves
            if self.decoder_channels(2**res) != 2 * self.encoder_channels(2**res):
                raise ValueError(f"narrow {self.narrow} gives odd channel counts at {2**res} px")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.out_size))

    @property
    def num_latent(self) -> int:
        """Latent codes the decoder reads: 2 per scale from 8 px up, plus 2 at 4 px (16 at 512 px)."""
        return self.log_size * 2 - 2

    @property
    def num_noise(self) -> int:
        """Noise maps: one for the 4 px conv, two per scale above (15 at 512 px)."""
        return (self.log_size - 2) * 2 + 1

    def decoder_channels(self, resolution: int) -> int:
        """StyleGAN2's channel table: 512 up to 32 px, then ``512 * 32 / res * multiplier`` (x ``narrow``)."""
        return _channels(resolution, self.channel_multiplier, self.narrow)

    def encoder_channels(self, resolution: int) -> int:
        """The U-Net's: the same table at half the width."""
        return _channels(resolution, self.channel_multiplier, self.narrow * 0.5)


def _channels(resolution: int, multiplier: int, narrow: float) -> int:
    if resolution <= 32:
        return int(512 * narrow)
    return int(16384 // resolution * multiplier * narrow)  # 64: 256 m, 128: 128 m, 256: 64 m, 512: 32 m


#: GFPGAN v1.4 (``GFPGANv1.4.pth``): out_size 512, 512-d styles, channel multiplier 2, narrow 1, different
#: latents per layer, SFT on half of the channels.
V14 = GFPGANConfig()


# ------------------------------------------------------------------------------------------------ modules


class ResBlock(nn.Module):
    """Residual block that halves (``scale`` 0.5) or doubles (2) the resolution, bilinearly."""

    def __init__(self, in_channels: int, out_channels: int, scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale = scale

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), _SLOPE)
        out = F.leaky_relu(self.conv2(self._resample(out)), _SLOPE)
        return out + self.skip(self._resample(x))


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution, bias-free: ``weight`` ``(1, out, in, k, k)`` scaled per input
    channel by ``modulation(style)``, optionally demodulated to unit norm per output channel; ``upsample``
    doubles the input bilinearly first."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        demodulate: bool = True,
        upsample: bool = False,
        eps: float = 1e-8,
    ):
        super().__init__()
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(torch.zeros(1, out_channels, in_channels, kernel_size, kernel_size))
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale = self.modulation(style)  # (B, in)
        weight = self.weight[0]  # (out, in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * scale[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # |w * s|^2 summed over (in, k, k) = sum_in s_in^2 * sum_kk w[o, in]^2
            energy = scale.square() @ weight.square().sum(dim=(2, 3)).t()  # (B, out)
            out = out * torch.rsqrt(energy + self.eps)[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated 3x3 conv x sqrt(2), plus ``weight`` x noise, plus ``bias``, leaky ReLU 0.2."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2)
        return F.leaky_relu(out + self.weight * noise + self.bias, _SLOPE)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (not demodulated) plus ``bias``, added to the upsampled previous image."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is None:
            return out
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return out + skip


class ConstantInput(nn.Module):
    """The learned ``(1, C, 4, 4)`` start of the decoder."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class NormStyleCode(nn.Module):
    """``x / sqrt(mean(x^2, dim 1) + 1e-8)``: the style MLP's first layer (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class Noises(nn.Module):
    """The stored noise maps ``noise0 .. noise<n-1>``, ``(1, 1, r, r)`` with ``r = 2 ** ((i + 5) // 2)``."""

    def __init__(self, count: int):
        super().__init__()
        for i in range(count):
            res = 2 ** ((i + 5) // 2)
            self.register_buffer(f"noise{i}", torch.zeros(1, 1, res, res))

    def maps(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise{i}") for i in range(len(self._buffers))]


class StyleGAN2GeneratorCSFT(nn.Module):
    """StyleGAN2 decoder with SFT conditions (``stylegan_decoder``)."""

    def __init__(self, cfg: GFPGANConfig):
        super().__init__()
        self.cfg = cfg
        style = cfg.num_style_feat
        layers: list[nn.Module] = [NormStyleCode()]
        for _ in range(cfg.num_mlp):
            layers += [nn.Linear(style, style), nn.LeakyReLU(_SLOPE)]
        self.style_mlp = nn.Sequential(*layers)
        c4 = cfg.decoder_channels(4)
        self.constant_input = ConstantInput(c4)
        self.style_conv1 = StyleConv(c4, c4, style, upsample=False)
        self.to_rgb1 = ToRGB(c4, style, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = Noises(cfg.num_noise)
        in_channels = c4
        for res in range(3, cfg.log_size + 1):
            out_channels = cfg.decoder_channels(2**res)
            self.style_convs.append(StyleConv(in_channels, out_channels, style, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, style, upsample=False))
            self.to_rgbs.append(ToRGB(out_channels, style, upsample=True))
            in_channels = out_channels

    def forward(self, styles: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        """``styles``: ``(B, num_latent, F)`` or ``(B, F)`` (repeated for every layer); ``conditions``:
        scale, shift, scale, shift, ... from 8 px up. Returns the ``(B, 3, out, out)`` image, about
        [-1, 1]."""
        if not self.cfg.input_is_latent:
            styles = self.style_mlp(styles)
        latent = styles if styles.ndim == 3 else styles[:, None].expand(-1, self.cfg.num_latent, -1)
        noise = self.noises.maps()
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1], None)
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.cfg.sft_half:
                    same, sft = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([same, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1),
        nn.LeakyReLU(_SLOPE),
        nn.Conv2d(channels, out_channels, 3, 1, 1),
    )


class GFPGANv1Clean(nn.Module):
    """GFPGAN (clean architecture): U-Net encoder + StyleGAN2 decoder with SFT. Attribute names are the
    checkpoint's keys (``conv_body_first``, ``conv_body_down``, ``final_conv``, ``conv_body_up``, ``toRGB``,
    ``final_linear``, ``stylegan_decoder``, ``condition_scale``, ``condition_shift``).

    ``forward``: ``(B, 3, out, out)`` RGB normalised to [-1, 1] -> restored image, same shape, about [-1, 1]
    (clamp it: :func:`sadtalker.enhance.frames.from_network`).
    """

    def __init__(self, cfg: GFPGANConfig = V14):
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder_channels
        log_size = cfg.log_size
        self.conv_body_first = nn.Conv2d(3, enc(cfg.out_size), 1)
        self.conv_body_down = nn.ModuleList()
        in_channels = enc(cfg.out_size)
        for res in range(log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_channels, enc(2 ** (res - 1)), 0.5))
            in_channels = enc(2 ** (res - 1))
        self.final_conv = nn.Conv2d(in_channels, enc(4), 3, 1, 1)
        self.conv_body_up = nn.ModuleList()
        in_channels = enc(4)
        for res in range(3, log_size + 1):
            self.conv_body_up.append(ResBlock(in_channels, enc(2**res), 2.0))
            in_channels = enc(2**res)
        self.toRGB = nn.ModuleList(nn.Conv2d(enc(2**res), 3, 1) for res in range(3, log_size + 1))
        latents = cfg.num_latent if cfg.different_w else 1
        self.final_linear = nn.Linear(enc(4) * 4 * 4, latents * cfg.num_style_feat)
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(cfg)
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for res in range(3, log_size + 1):
            channels = enc(2**res)
            sft_channels = channels if cfg.sft_half else 2 * channels
            self.condition_scale.append(_sft_branch(channels, sft_channels))
            self.condition_shift.append(_sft_branch(channels, sft_channels))

    def forward(self, x: torch.Tensor, return_rgb: bool = False):
        """The restored image; with ``return_rgb`` also the U-Net's intermediate RGB images (training aid)."""
        feat = F.leaky_relu(self.conv_body_first(x), _SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), _SLOPE)
        style = self.final_linear(feat.flatten(1))
        if self.cfg.different_w:
            style = style.view(style.shape[0], -1, self.cfg.num_style_feat)
        conditions: list[torch.Tensor] = []
        rgbs = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[-1 - i])
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))
        image = self.stylegan_decoder(style, conditions)
        return (image, rgbs) if return_rgb else image


# ------------------------------------------------------------------------------------------------ weights


def gfpgan_layout(cfg: GFPGANConfig = V14, prefix: str = GFPGAN_PREFIX) -> list[tuple[str, str, tuple]]:
    """``(key, dtype, shape)`` rows of the checkpoint in ``state_dict()`` order, derived from
    :class:`GFPGANv1Clean` built on the meta device (no memory). Keys carry ``prefix`` (the file's)."""
    with torch.device("meta"):
        module = GFPGANv1Clean(cfg)
    return [
        (prefix + key, str(t.dtype).removeprefix("torch."), tuple(t.shape))
        for key, t in module.state_dict().items()
    ]


def layout_tsv(cfg: GFPGANConfig = V14) -> str:
    """The layout as the reference's checkpoint TSVs write it: ``key<TAB>dtype<TAB>shape`` rows (shape
    comma-separated) under a header line. ``tests/data/GFPGANv1.4.pth.tsv`` is ``layout_tsv()``."""
    lines = ["key\tdtype\tshape"]
    lines += [f"{key}\t{dtype}\t{','.join(map(str, shape))}" for key, dtype, shape in gfpgan_layout(cfg)]
    return "\n".join(lines) + "\n"


def synthetic_gfpgan_state(cfg: GFPGANConfig = V14, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict (no prefix) filled by the project's synthetic rule
    (:func:`sadtalker.weights.synthetic.synthetic_state`, keyed by seed and the file's flat key)."""
    from sadtalker.weights.synthetic import synthetic_state

    state = synthetic_state(gfpgan_layout(cfg), seed)
    return {key[len(GFPGAN_PREFIX) :]: torch.from_numpy(array) for key, array in state.items()}


def write_synthetic_gfpgan(path: str | Path, seed: int = 0, cfg: GFPGANConfig = V14) -> Path:
    """Write a checkpoint in the official layout, ``{"params_ema": state_dict}`` via ``torch.save``, with
    deterministic pseudo-random values. For tests and offline runs: the images it makes are not faces.
    Written atomically (``sadtalker.atomic``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({GFPGAN_PREFIX.rstrip("/"): synthetic_gfpgan_state(cfg, seed)}, tmp)
    return path


def gfpgan_state_from_checkpoint(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's state dict from a flat checkpoint (``params_ema/...``; ``params/...`` when a file has no
    EMA weights, as ``GFPGANer`` falls back)."""
    from sadtalker.weights.loading import sub_state_dict

    for prefix in (GFPGAN_PREFIX, "params/"):
        if any(key.startswith(prefix) for key in flat):
            return sub_state_dict(flat, prefix)
    raise WeightsError("not a GFPGAN checkpoint: no params_ema (or params) state dict in it")


_LOADED: dict[tuple, GFPGANv1Clean] = {}
_LOAD_LOCK = threading.Lock()


def load_gfpgan(
    path: str | Path, device: str | torch.device = "cpu", cfg: GFPGANConfig = V14
) -> GFPGANv1Clean:
    """The network in eval mode on ``device``, loaded once per process per (file, size, mtime, device, cfg);
    concurrent first calls wait for one load. ``cfg``: the architecture the file must have (default v1.4;
    small configs are for tests).

    Raises:
        WeightsError: missing file, a pickle that is not plain tensors (``weights_only=True``), a missing or
            unexpected key, or a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"GFPGAN checkpoint not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(torch.device(device)), cfg)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(path, torch.device(device), cfg)
        return _LOADED[key]


def _load(path: Path, device: torch.device, cfg: GFPGANConfig) -> GFPGANv1Clean:
    from sadtalker.weights.loading import load_checkpoint, load_strict

    state = gfpgan_state_from_checkpoint(load_checkpoint(path))
    net = GFPGANv1Clean(cfg)
    load_strict(net, state, f"GFPGAN ({path.name})")
    return net.eval().requires_grad_(False).to(device)


def parameter_count(cfg: GFPGANConfig = V14) -> int:
    """Number of stored values (parameters and noise buffers) of the layout."""
    return sum(int(np.prod(shape)) for _, _, shape in gfpgan_layout(cfg))
