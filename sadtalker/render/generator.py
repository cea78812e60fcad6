"""Occlusion-aware SPADE generator (SadTalker §3.3 face render; face-vid2vid generator with a SPADE decoder).

Encodes the source image into a 3-D feature volume (appearance feature ``f_s``), warps it with the dense
motion predicted from the source/driving keypoints, projects it back to 2-D, masks occluded regions and
decodes the frame with the SPADE decoder. The source encoding does not depend on the driving keypoints:
:meth:`OcclusionAwareSPADEGenerator.encode_source` computes it once per clip and
:meth:`~OcclusionAwareSPADEGenerator.forward_from_features` renders any number of frames from it.
Checkpoint prefix: ``generator.`` (safetensors) or ``generator/`` (legacy facevid2vid file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.errors import CompilerMissingError
from sadtalker.render.blocks import DownBlock2d, ResBlock3d, SameBlock2d
from sadtalker.render.dense_motion import DenseMotionConfig, DenseMotionNetwork
from sadtalker.render.spade import SPADEDecoder, SPADEDecoderConfig

CPU_FRAMES_PER_CALL = 1
"""Frames per pass through the networks on the CPU (a batch is split into passes of this size). Every
frame's arithmetic is its own, so the frames are those of a batched pass: bit for bit at the official size
on the 2-core build machine (checked; golden f unchanged), within oneDNN's kernel choice (about 1e-5) at
other shapes. One frame at a time costs no speed there (oneDNN parallelises within a frame; 2026-12-03:
2.54 s/frame at batch 1 against 2.64 at batch 2 with tcmalloc, 3.01 / 2.97 with glibc's malloc) and holds
one frame's activations instead of B (a 219 MB live peak per 256 px frame). On a GPU the pass size comes
from free memory (:func:`frames_per_pass`)."""

FRAME_BYTES_256 = 330e6
"""Device memory one float32 frame at 256 px needs in a pass: the largest live set of a frame's tensors is
219 MB (traced on the CPU after the SPADE changes), plus 50 % for convolution workspaces and the allocator's
rounding. It scales with the pixels and the element size."""

GPU_MEMORY_SHARE = 0.8
"""Share of the GPU's free memory a pass may plan to use (the rest: other processes, fragmentation)."""

FramesFn = Callable[["SourceFeatures", torch.Tensor, torch.Tensor], torch.Tensor]
"""One pass of the generator: (source features, ``kp_source``, ``kp_driving``) → ``(B, 3, S, S)``
(:meth:`OcclusionAwareSPADEGenerator.render_frames`, or its compiled form: :func:`compile_frames`)."""


def cpp_compiler_problem() -> str | None:
    """Why inductor cannot build CPU kernels on this machine (no usable C++ compiler), or None."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as error:  # inductor raises its own types here (InvalidCxxCompiler, ...)
        return str(error) or type(error).__name__
    return None


def compile_frames(generator: OcclusionAwareSPADEGenerator, device: torch.device) -> FramesFn:
    """``torch.compile`` of ``generator.render_frames`` (inductor, with freezing: parameters become
    constants, so on the CPU the convolutions take oneDNN's prepacked weights and fused post-ops).

    Compiles lazily, on the first pass of each shape: once per process and pass size (inductor's cache
    keeps the generated kernels for later processes). Frames match the eager ones within float rounding
    (about 3e-5 at 256 px on the build machine). On a batch of a new size the batch dimension is made
    dynamic, so a clip's shorter last batch costs one recompile, not one per size.

    Raises:
        CompilerMissingError: ``device`` is the CPU and no C++ compiler is found (inductor generates C++).
    """
    problem = cpp_compiler_problem() if device.type == "cpu" else None
    if problem is not None:
        raise CompilerMissingError(
            "--compile on the CPU needs a C++ compiler (install g++, or set CXX), or render without "
            f"--compile: {problem}"
        )
    return torch.compile(generator.render_frames, options={"freezing": True})


def frames_per_pass(device: torch.device, batch: int, size: int, dtype: torch.dtype) -> int:
    """Frames to render per pass: :data:`CPU_FRAMES_PER_CALL` on the CPU; on a CUDA device as many of the
    batch's ``batch`` frames as fit in :data:`GPU_MEMORY_SHARE` of its free memory at
    :data:`FRAME_BYTES_256` per frame (scaled to ``size`` and ``dtype``), at least 1; else the whole batch."""
    if device.type == "cpu":
        return min(batch, CPU_FRAMES_PER_CALL)
    if device.type != "cuda":
        return batch
    free, _ = torch.cuda.mem_get_info(device)
    per_frame = FRAME_BYTES_256 * (size / 256) ** 2 * dtype.itemsize / 4
    return max(1, min(batch, int(free * GPU_MEMORY_SHARE // per_frame)))


def render_in_passes(render, batch: int, step: int, device: torch.device) -> torch.Tensor:
    """``torch.cat([render(i, j) for each pass [i, j) of step frames])``; on a CUDA out-of-memory error the
    passes are halved and the batch starts over (the estimate was wrong: another process took memory), down
    to one frame, whose failure is raised. ``render(i, j)`` → ``(j - i, 3, S, S)``."""
    while True:
        try:
            return torch.cat([render(i, min(i + step, batch)) for i in range(0, batch, step)])
        except torch.OutOfMemoryError:
            if step == 1:
                raise
            step = max(1, step // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()


@dataclass(frozen=True)
class GeneratorConfig:
    """``generator_params`` (+ common_params, ``dense_motion_params``) of facerender.yaml."""

    image_channel: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    decoder_channels: int = 64
    spade_hidden: int = 128
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)

    def __post_init__(self) -> None:
        if self.reshape_channel * self.reshape_depth != self.max_features:
            raise ValueError("reshape_channel * reshape_depth must equal max_features")
        if (self.dense_motion.feature_channel, self.dense_motion.reshape_depth) != (
            self.reshape_channel,
            self.reshape_depth,
        ):
            raise ValueError(
                "dense_motion.feature_channel/reshape_depth must equal reshape_channel/reshape_depth"
            )


@dataclass(frozen=True)
class SourceFeatures:
    """Everything the generator derives from the source image alone (batch 1 or B).

    ``feature_3d``: ``(B, reshape_channel, D, S/4, S/4)`` appearance volume after the 3-D res blocks;
    ``compressed``: ``(B, compress, D, S/4, S/4)``, the dense motion network's view of it.
    """

    feature_3d: torch.Tensor
    compressed: torch.Tensor


class OcclusionAwareSPADEGenerator(nn.Module):
    """Source image + source/driving keypoints → frames.

    Args (``forward``): ``source_image`` ``(1 or B, 3, S, S)`` in [0, 1], ``kp_source`` and ``kp_driving``
    ``(1 or B, K, 3)``; ``S`` divisible by 128 (256 and 512 are the official sizes).
    Returns ``(B, 3, S, S)`` RGB in (0, 1).
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        cfg = config or GeneratorConfig()
        self.config = cfg
        # Registration order = checkpoint order.
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion)
        self.first = SameBlock2d(cfg.image_channel, cfg.block_expansion, kernel_size=3)
        channels = [min(cfg.max_features, cfg.block_expansion * 2**i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(cin, cout) for cin, cout in pairwise(channels))
        self.second = nn.Conv2d(channels[-1], cfg.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))
        decoder_in = cfg.block_expansion * 2**cfg.num_down_blocks
        self.third = SameBlock2d(cfg.max_features, decoder_in, kernel_size=3, lrelu=True)
        self.fourth = nn.Conv2d(decoder_in, decoder_in, kernel_size=1)
        self.decoder = SPADEDecoder(
            SPADEDecoderConfig(
                in_channels=decoder_in,
                out_channels=cfg.decoder_channels,
                label_nc=decoder_in,
                hidden=cfg.spade_hidden,
            )
        )

    def encode_source(self, source_image: torch.Tensor) -> SourceFeatures:
        """Source-only work, once per clip: ``(B, 3, S, S)`` → :class:`SourceFeatures`."""
        cfg = self.config
        out = self.first(source_image)  # (B, 3, 256, 256) -> (B, 64, 256, 256)
        for block in self.down_blocks:
            out = block(out)  # -> (B, 128, 128, 128) -> (B, 256, 64, 64)
        out = self.second(out)  # -> (B, 512, 64, 64)
        b, _, h, w = out.shape
        feature_3d = out.view(b, cfg.reshape_channel, cfg.reshape_depth, h, w)  # -> (B, 32, 16, 64, 64)
        feature_3d = self.resblocks_3d(feature_3d)
        compressed = self.dense_motion_network.compress_source(feature_3d)  # -> (B, 4, 16, 64, 64)
        return SourceFeatures(feature_3d=feature_3d, compressed=compressed)

    def forward_from_features(
        self,
        features: SourceFeatures,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        frames_fn: FramesFn | None = None,
    ) -> torch.Tensor:
        """Render B frames from cached source features: keypoints ``(1 or B, K, 3)`` → ``(B, 3, S, S)``.

        In passes of :func:`frames_per_pass` frames (one on the CPU; what free memory allows on a GPU,
        halved on an out-of-memory error: :func:`render_in_passes`), each by ``frames_fn`` (default
        :meth:`render_frames`; :func:`compile_frames` gives its compiled form)."""
        frames_fn = frames_fn or self.render_frames
        batch, device = kp_driving.shape[0], kp_driving.device
        size = 4 * features.compressed.shape[-1]  # the decoder upsamples the 64 x 64 features 4x
        step = frames_per_pass(device, batch, size, features.compressed.dtype)
        if batch <= step and device.type != "cuda":
            return frames_fn(features, kp_source, kp_driving)

        def rows(t: torch.Tensor, i: int, j: int) -> torch.Tensor:  # batch-1 sources are broadcast
            return t if t.shape[0] == 1 else t[i:j]

        def render(i: int, j: int) -> torch.Tensor:
            sources = SourceFeatures(rows(features.feature_3d, i, j), rows(features.compressed, i, j))
            return frames_fn(sources, rows(kp_source, i, j), kp_driving[i:j])

        return render_in_passes(render, batch, step, device)

    def render_frames(
        self, features: SourceFeatures, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """One pass: source features + keypoints ``(1 or B, K, 3)`` → ``(B, 3, S, S)`` (all B at once)."""
        motion = self.dense_motion_network(features.compressed, kp_source, kp_driving)
        deformation = motion.deformation  # (B, 16, 64, 64, 3)
        batch, d, h, w, _ = deformation.shape
        feature_3d = features.feature_3d.expand(batch, -1, -1, -1, -1)
        out = F.grid_sample(
            feature_3d, deformation, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # -> (B, 32, 16, 64, 64)
        out = out.reshape(batch, -1, h, w)  # -> (B, 512, 64, 64), channel = 16·c + d
        out = self.fourth(self.third(out))  # -> (B, 256, 64, 64)
        if motion.occlusion_map is not None:
            out = out * motion.occlusion_map
        return self.decoder(out)  # -> (B, 3, 256, 256)

    def forward(
        self, source_image: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_from_features(self.encode_source(source_image), kp_source, kp_driving)
