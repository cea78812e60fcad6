"""The render options: the one typed model every entry point turns into.

Each option is declared once here, with its type, default, range and description. The rest is derived:
the manifest's option columns (``manifests.schema.ManifestRow`` is ``RowOptions`` plus ``id``, ``image``
and ``audio``), the render flags of both command lines (``sadtalker.cli``) and the flow's ``dtype``.

- :class:`RowOptions`: what a manifest row may set.
- :class:`RenderOptions`: those plus the worker's settings (``device``, ``dtype``, :data:`WORKER_FIELDS`):
  everything one video depends on besides its photo and speech.

Both are frozen pydantic models: a bad value raises ``pydantic.ValidationError`` (a ``ValueError``) naming
the option.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

__all__ = [
    "ANGLE_FIELDS",
    "ENHANCERS",
    "PREPROCESS_MODES",
    "WEIGHTS_POLICIES",
    "WORKER_FIELDS",
    "DType",
    "Enhancer",
    "Preprocess",
    "RenderOptions",
    "RowOptions",
    "WeightsPolicy",
    "parse_angles",
]

#: The crop modes (``sadtalker.face.crop``).
Preprocess = Literal["crop", "extcrop", "resize", "full", "extfull"]
PREPROCESS_MODES: tuple[Preprocess, ...] = get_args(Preprocess)
DType = Literal["float32", "float16", "bfloat16"]
Enhancer = Literal["none", "gfpgan"]
ENHANCERS: tuple[Enhancer, ...] = get_args(Enhancer)
#: Which weights a worker renders with (``sadtalker.loader.resolve_policy``): a worker setting, like
#: ``device``, declared here so that the command lines and the flow name it without importing the loader.
WeightsPolicy = Literal["official", "synthetic", "auto"]
WEIGHTS_POLICIES: tuple[WeightsPolicy, ...] = get_args(WeightsPolicy)

Angle = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
#: Free-view keyframes in degrees, interpolated over the clip. A list, as a Parquet list column holds it;
#: :class:`RenderOptions` keeps them as tuples.
Angles = Annotated[list[Angle], Field(min_length=1, max_length=64)]
ANGLE_FIELDS: tuple[str, ...] = ("input_yaw", "input_pitch", "input_roll")


class RowOptions(BaseModel):
    """The options of one video that a manifest row may set (the manifest's option columns)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Literal[256, 512] = Field(256, description="Render resolution of the face model: 256 or 512.")
    preprocess: Preprocess = Field(
        "crop",
        description="How the photo is cropped: crop/extcrop animate the face crop (extcrop with a wider "
        "border); full/extfull paste it back into the whole photo; resize animates the whole (already "
        "tight) photo.",
    )
    still: bool = Field(False, description="Keep the head still (less head motion; use with full).")
    pose_style: int = Field(0, ge=0, le=45, description="Head-motion style of PoseVAE, 0-45.")
    expression_scale: float = Field(
        1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Scale of the expression (mouth) motion, >= 0 (1 = as predicted).",
    )
    ref_eyeblink: str | None = Field(
        None,
        description="Optional reference whose blinks drive the eyes: a video, or coefficients (.npz with "
        "coeff_3dmm, or .npy), told apart by content; a path or any fsspec URL (in a manifest, relative "
        "to its folder).",
    )
    ref_pose: str | None = Field(
        None,
        description="Optional reference whose head motion is added: a video or coefficients, as for "
        "ref_eyeblink.",
    )
    input_yaw: Angles | None = Field(None, description="Free-view yaw keyframes in degrees, each -90..90.")
    input_pitch: Angles | None = Field(
        None, description="Free-view pitch keyframes in degrees, each -90..90."
    )
    input_roll: Angles | None = Field(None, description="Free-view roll keyframes in degrees, each -90..90.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the blink and pose noise, 0 .. 2**32-1.")
    batch_size: int = Field(2, ge=1, le=64, description="Frames per generator batch, 1-64 (memory vs speed).")
    enhancer: Enhancer = Field(
        "none",
        description="Face restoration of every rendered frame: none, or gfpgan (GFPGAN v1.4; needs "
        "GFPGANv1.4.pth with official weights: `sadtalker weights fetch gfpgan`; slow on a CPU).",
    )

    @field_validator("pose_style", "seed", "batch_size", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1: a boolean column would render pose style 1 without a word.
        if type(value).__name__ in ("bool", "bool_"):
            raise ValueError(f"Input should be a valid integer, not a boolean ({value!r})")
        return value


class RenderOptions(RowOptions):
    """What one video depends on besides its photo and speech: the row's options and the worker's.

    ``ref_eyeblink`` / ``ref_pose`` are local paths by the time the pipeline reads them (callers download
    remote references first). The keyframes are tuples, so that frozen options hold no mutable list.
    """

    device: str = Field("cpu", description="Torch device of the networks: cpu, cuda or cuda:N.")
    dtype: DType = Field(
        "float32", description="Renderer precision: float32, or float16 / bfloat16 (on a GPU only)."
    )
    compile: bool = Field(
        False,
        description="Render through torch.compile (inductor): a one-off compile per worker process and "
        "batch shape (about 40 s on a 2-core CPU), then faster frames; CPU workers need a C++ compiler.",
    )

    @field_validator(*ANGLE_FIELDS)
    @classmethod
    def _frozen_angles(cls, value: list[float] | None) -> tuple[float, ...] | None:
        return None if value is None else tuple(value)

    @field_serializer(*ANGLE_FIELDS)
    def _angles_as_lists(self, value: tuple[float, ...] | None) -> list[float] | None:
        return None if value is None else list(value)


#: The worker's fields of :class:`RenderOptions`: not manifest columns, set by whoever runs the row.
WORKER_FIELDS: frozenset[str] = frozenset(RenderOptions.model_fields) - frozenset(RowOptions.model_fields)


def parse_angles(text: str) -> list[float]:
    """Keyframes written as text (a CSV cell, a command-line value): ``[-20, 30]``, ``-20;30`` or ``-20 30``.

    Raises:
        ValueError: not a list of numbers.
    """
    text = text.strip()
    if text.startswith("["):
        return [float(v) for v in json.loads(text)]
    return [float(v) for v in re.split(r"[;\s]+", text) if v]
