"""Per-item options: the one typed record every entry point (CLI, Python API, manifest row) turns into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Preprocess = Literal["crop", "extcrop", "resize", "full", "extfull"]
PREPROCESS_MODES: tuple[str, ...] = ("crop", "extcrop", "resize", "full", "extfull")
DType = Literal["float32", "float16", "bfloat16"]
Enhancer = Literal["none", "gfpgan"]
ENHANCERS: tuple[str, ...] = ("none", "gfpgan")


@dataclass(frozen=True)
class RenderOptions:
    """What one video depends on, besides its photo and speech.

    ``ref_eyeblink`` / ``ref_pose``: local paths of reference coefficient files (``.npz`` with a
    ``coeff_3dmm`` (N, 70|73) array, or a video whose frames are reconstructed) or None.
    ``input_yaw`` / ``input_pitch`` / ``input_roll``: free-view camera angles in degrees (the official
    ``--input_yaw``/``--input_pitch``/``--input_roll``).
    ``enhancer``: face restoration of every rendered frame (``gfpgan``: GFPGAN v1.4,
    :mod:`sadtalker.enhance`), applied to the aligned face before any paste-back; ``none`` (default) leaves
    the frames as rendered.
    """

    size: Literal[256, 512] = 256
    preprocess: Preprocess = "crop"
    still: bool = False
    pose_style: int = 0
    expression_scale: float = 1.0
    ref_eyeblink: str | None = None
    ref_pose: str | None = None
    input_yaw: tuple[float, ...] | None = None
    input_pitch: tuple[float, ...] | None = None
    input_roll: tuple[float, ...] | None = None
    seed: int = 0
    batch_size: int = 2
    device: str = "cpu"
    dtype: DType = "float32"
    enhancer: Enhancer = "none"

    def __post_init__(self) -> None:
        if self.size not in (256, 512):
            raise ValueError(f"size must be 256 or 512, got {self.size}")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
        if not 0 <= self.pose_style <= 45:
            raise ValueError(f"pose_style must be in [0, 45], got {self.pose_style}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.expression_scale >= 0:
            raise ValueError(f"expression_scale must be >= 0, got {self.expression_scale}")
        if self.enhancer not in ENHANCERS:
            raise ValueError(f"enhancer must be one of {ENHANCERS}, got {self.enhancer!r}")
