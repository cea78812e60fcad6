"""SPADE decoder of the face renderer (SadTalker §3.3, face-vid2vid generator; SPADE: Park et al. 2019).

The decoder turns the warped, occlusion-masked 2-D feature map into the RGB frame. Its residual blocks use
spectral-normalised convolutions; the official checkpoint stores them as PyTorch's ``spectral_norm``
parametrisation (``weight_orig``, ``weight_u``, ``weight_v``). At inference no power iteration runs, so the
effective weight ``weight_orig / (u · (W v))`` is a constant: :class:`SpectralNormConv2d` folds it into
``weight_orig`` whenever its state is loaded, so the decoder holds each weight once (122 MB at 256).

Each SPADE first convolves the segmentation map resized (nearest) to its block's resolution, 2× and 4× the
map's own at the two upsampling blocks. :func:`conv3x3_of_upsampled` computes that convolution from the
small map, without the upsampled copy: a quarter of the FLOPs of the decoder's largest convs at 4×.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNormConv2d(nn.Module):
    """A Conv2d whose weight is stored as a spectral-norm parametrisation (inference only).

    State (the checkpoint keys, in PyTorch's order): ``bias`` (if any), ``weight_orig``
    ``(out, in, k, k)``, ``weight_u`` ``(out,)``, ``weight_v`` ``(in·k·k,)``. The effective weight

        ``weight = weight_orig / σ``,  ``σ = u · (weight_orig.reshape(out, -1) @ v)``

    is folded into ``weight_orig`` by a load-state-dict post hook (and by :meth:`refresh_weight`, to call
    after changing ``weight_orig/u/v`` in place): ``weight_orig`` becomes ``weight_orig / σ`` and u, v stay,
    so σ of the folded weight is 1 and :attr:`weight` is ``weight_orig`` itself. A loaded module therefore
    holds each weight once, and its ``state_dict()`` is an equivalent parametrisation (folded), not the
    file's bytes. It matches PyTorch's ``spectral_norm`` in eval mode exactly: the stored u, v are used as
    they are.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True
    ):
        super().__init__()
        # Registration order = the state_dict order of torch.nn.utils.spectral_norm: parameters (bias,
        # weight_orig), then buffers (weight_u, weight_v).
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        fan_in = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(fan_in))
        self.padding = padding
        self._reset_parameters()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def _reset_parameters(self) -> None:
        """Conv2d's default init and random unit u, v (only matters for a network used without weights)."""
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight_v.numel())
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_u.copy_(F.normalize(torch.randn_like(self.weight_u), dim=0))
            self.weight_v.copy_(F.normalize(torch.randn_like(self.weight_v), dim=0))
        self.refresh_weight()

    @property
    def weight(self) -> torch.Tensor:
        """The effective convolution weight ``(out, in, k, k)`` (``weight_orig``, folded)."""
        return self.weight_orig

    @torch.no_grad()
    def refresh_weight(self) -> None:
        """Fold σ of ``weight_orig``, ``weight_u`` and ``weight_v`` into ``weight_orig``.

        A new tensor, not an in-place division: with ``load_state_dict(assign=True)`` the parameter may be
        the caller's own tensor, which must not change under it."""
        w = self.weight_orig.detach()
        if w.is_meta:  # built on the meta device: nothing to fold until a state is loaded
            return
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        self.weight_orig = nn.Parameter(w / sigma, requires_grad=self.weight_orig.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        out, cin, k, _ = self.weight_orig.shape
        return f"{cin}, {out}, kernel_size={k}, padding={self.padding}, bias={self.bias is not None}"


def _phase_classes(factor: int) -> dict[tuple[int, int, int], list[int]]:
    """Output phases of one axis of ``conv3x3(nearest_upsample(x, factor))``, grouped by what they read.

    Output index ``factor·k + p`` (phase ``p``) reads the upsampled indices ``factor·k + p + t``,
    ``t ∈ {-1, 0, 1}``, which nearest upsampling maps to ``x`` indices ``k + (p + t) // factor``. Returns
    ``{(offset of t=-1, of t=0, of t=+1): [phases]}``; phases with the same offsets have the same output.
    At factor 4: ``{(-1, 0, 0): [0], (0, 0, 0): [1, 2], (0, 0, 1): [3]}``.
    """
    classes: dict[tuple[int, int, int], list[int]] = {}
    for phase in range(factor):
        classes.setdefault(tuple((phase + t) // factor for t in (-1, 0, 1)), []).append(phase)
    return classes


def _tap_matrix(offsets: tuple[int, int, int], like: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """``(lo, hi, M)``: the ``x`` offsets ``lo..hi`` a phase class reads and ``M`` ``(hi-lo+1, 3)`` with
    ``M[o - lo, t + 1] = 1`` where tap ``t`` reads offset ``o``: the class's kernel is ``M_r · W · M_cᵀ``."""
    lo, hi = min(offsets), max(offsets)
    matrix = torch.zeros(hi - lo + 1, 3, dtype=like.dtype, device=like.device)
    for tap, offset in enumerate(offsets):
        matrix[offset - lo, tap] = 1
    return lo, hi, matrix


def _is_channels_last(t: torch.Tensor) -> bool:
    """Stored channels-last and not also plain-contiguous (a 1×1 map or one channel is both)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def conv3x3_of_upsampled(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, factor: int
) -> torch.Tensor:
    """``F.conv2d(F.interpolate(x, scale_factor=factor, mode="nearest"), weight, bias, padding=1)``
    without making the upsampled input.

    Every output pixel of a 3×3 conv over a nearest-upsampled map reads at most 2×2 pixels of ``x``, so
    each output phase (its position modulo ``factor``) is a small conv over ``x`` whose kernel sums the
    3×3 taps that land on the same ``x`` pixel (:func:`_phase_classes`). At factor 4 the nine distinct
    phase classes need 25 taps per ``x`` pixel instead of 9·16 = 144; at factor 2, 16 instead of 36. Zero
    padding of the upsampled map is zero padding of ``x``. The results equal the direct form up to the
    order of the sums (relative differences ~1e-7 in float32).

    Args: ``x`` ``(B, C, h, w)``; ``weight`` ``(O, C, 3, 3)``; ``bias`` ``(O,)`` or None; ``factor`` ≥ 1.
    Returns ``(B, O, factor·h, factor·w)``.
    """
    batch, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    channels_last = _is_channels_last(x)
    if channels_last:  # (B, h, f, w, f, O) viewed as NCHW with channels-last strides
        out = x.new_empty(batch, h, factor, w, factor, weight.shape[0]).permute(0, 5, 1, 2, 3, 4)
    else:
        out = x.new_empty(batch, weight.shape[0], h, factor, w, factor)
    classes = _phase_classes(factor)
    for row_offsets, row_phases in classes.items():
        r_lo, r_hi, rows = _tap_matrix(row_offsets, weight)
        for col_offsets, col_phases in classes.items():
            c_lo, c_hi, cols = _tap_matrix(col_offsets, weight)
            kernel = torch.einsum("ia,ocab,jb->ocij", rows, weight, cols)
            # output k reads x[k + lo .. k + hi] = padded[k + 1 + lo .. k + 1 + hi]: a valid conv
            phase = F.conv2d(padded[:, :, 1 + r_lo : 1 + r_hi + h, 1 + c_lo : 1 + c_hi + w], kernel, bias)
            for row_phase in row_phases:
                for col_phase in col_phases:
                    out[:, :, :, row_phase, :, col_phase] = phase
    if channels_last:
        return out.permute(0, 2, 3, 4, 5, 1).reshape(batch, h * factor, w * factor, -1).permute(0, 3, 1, 2)
    return out.view(batch, weight.shape[0], h * factor, w * factor)


def _refresh_after_load(module: nn.Module, incompatible_keys: object) -> None:
    assert isinstance(module, SpectralNormConv2d)
    module.refresh_weight()


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``instance_norm(x) * (1 + γ(seg)) + β(seg)``.

    Args: ``x`` ``(B, norm_nc, H, W)``; ``seg`` ``(B, label_nc, h, w)``, resized to ``(H, W)`` (nearest;
    when ``(H, W)`` is an integer multiple of ``(h, w)``, ``mlp_shared`` runs on ``seg`` itself through
    :func:`conv3x3_of_upsampled`). Returns ``(B, norm_nc, H, W)``.
    """

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1) -> torch.Tensor:
        """``upsample`` > 1: ``x`` is the map before its nearest ×upsample, ``(B, norm_nc, H/u, W/u)``. The
        statistics of a nearest-upsampled map are those of the map, so the small ``x`` is normalised and
        the result upsampled: the full-size input is never made (67 MB at 256 px in ``up_1``)."""
        normalized = self.param_free_norm(x)  # always NCHW-contiguous (instance norm reshapes)
        if _is_channels_last(x):
            # in the decoder's layout, or the in-place products below mix layouts (10x slower)
            normalized = normalized.contiguous(memory_format=torch.channels_last)
        if upsample > 1:
            normalized = F.interpolate(normalized, scale_factor=float(upsample), mode="nearest")
        actv = self._shared(seg, normalized.shape[2:])  # -> (B, 128, H, W)
        # normalized * (1 + γ) + β, in place on the fresh tensors: the same operations in the same order
        # (bit for bit), without three more (B, norm_nc, H, W) temporaries (134 MB each at 256 px, batch 2).
        gamma = self.mlp_gamma(actv).add_(1)
        normalized.mul_(gamma)
        del gamma
        return normalized.add_(self.mlp_beta(actv))

    def _shared(self, seg: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """``mlp_shared(resize(seg, size))``: ``(B, label_nc, h, w) -> (B, hidden, *size)``."""
        (h, w), (height, width) = seg.shape[2:], size
        factor = height // h
        if (h, w) == (height, width):
            return self.mlp_shared(seg)
        if (factor * h, factor * w) != (height, width):  # not an integer multiple: resize, then convolve
            return self.mlp_shared(F.interpolate(seg, size=size, mode="nearest"))
        conv = self.mlp_shared[0]  # then mlp_shared[1], the ReLU, in place on the fresh tensor
        return torch.relu_(conv3x3_of_upsampled(seg, conv.weight, conv.bias, factor))


class SPADEResnetBlock(nn.Module):
    """SPADE residual block ``fin -> fout`` (middle ``min(fin, fout)``), LeakyReLU(0.2) pre-activations.

    Shortcut: ``conv_s(norm_s(x))`` (1×1, no bias, no activation) when ``fin != fout``, else ``x``.
    ``(B, fin, H, W), seg -> (B, fout, H, W)``; with ``upsample`` = u > 1, ``x`` is ``(B, fin, H/u, W/u)``
    and the block acts on its nearest ×u upsampling (each SPADE upsamples its normalised input).
    """

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmid, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1) -> torch.Tensor:
        if self.learned_shortcut:
            x_s = self.conv_s(self.norm_s(x, seg, upsample))
        else:
            x_s = F.interpolate(x, scale_factor=float(upsample), mode="nearest") if upsample > 1 else x
        # In place on tensors made here (the SPADE outputs, conv_1's output): same values, fewer buffers.
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg, upsample), 0.2, inplace=True))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2, inplace=True))
        return dx.add_(x_s)  # x_s + dx (addition commutes exactly)


@dataclass(frozen=True)
class SPADEDecoderConfig:
    """Channel widths of the decoder (fixed in the reference: 256 in, 64 before the RGB conv, seg 256,
    SPADE hidden 128, 6 middle blocks); other values only serve small test networks."""

    in_channels: int = 256
    out_channels: int = 64
    label_nc: int = 256
    hidden: int = 128
    num_middle_blocks: int = 6


class SPADEDecoder(nn.Module):
    """``fc`` → 6 × SPADE block (2C) → ×2 → ``up_0`` (2C→C) → ×2 → ``up_1`` (C→64) → RGB conv → sigmoid.

    Args: ``feature`` ``(B, C=256, h, w)``, also the SPADE segmentation input.
    Returns ``(B, 3, 4h, 4w)`` in (0, 1).
    """

    def __init__(self, config: SPADEDecoderConfig | None = None):
        super().__init__()
        cfg = config or SPADEDecoderConfig()
        ic, oc, label_nc, hidden = cfg.in_channels, cfg.out_channels, cfg.label_nc, cfg.hidden
        self.num_middle_blocks = cfg.num_middle_blocks
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(cfg.num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc, hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc, hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc, hidden)
        self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        feature = feature.contiguous(memory_format=torch.channels_last)
        seg = feature
        x = self.fc(feature)  # (B, 256, 64, 64) -> (B, 512, 64, 64)
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        # ×2 nearest, then the block; the blocks upsample inside (SPADEResnetBlock), never holding the
        # upsampled input
        x = self.up_0(x, seg, upsample=2)  # (B, 512, 64, 64) -> (B, 256, 128, 128)
        x = self.up_1(x, seg, upsample=2)  # -> (B, 64, 256, 256)
        x = self.conv_img(F.leaky_relu(x, 0.2, inplace=True))  # -> (B, 3, 256, 256)
        return torch.sigmoid(x)
