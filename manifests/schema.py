"""The one typed model of a manifest row (a Parquet row = one video).

Per-row options mirror :class:`sadtalker.options.RenderOptions` (same names, defaults and ranges), so a
row turns into the options of its video with :meth:`ManifestRow.to_options`. Unknown columns and
out-of-range values are errors. ``device`` and ``dtype`` are not row options: they belong to the worker
that runs the row (flow parameters).
"""

from __future__ import annotations

import dataclasses
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sadtalker.options import RenderOptions

__all__ = ["ID_PATTERN", "OPTION_COLUMNS", "REQUIRED_COLUMNS", "URI_COLUMNS", "ManifestRow", "column_kind"]

#: Row ids name output folders: letters, digits, ``.``, ``_``, ``-``; no leading dot (see sadtalker.paths).
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
Angle = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Angles = Annotated[list[Angle], Field(min_length=1, max_length=64)]


class ManifestRow(BaseModel):
    """One photo-speech pair and the options of its video."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=ID_PATTERN,
        description="Unique row id, also ignoring case (Alice and alice would be one folder on "
        "case-insensitive storage); names the row's output folder (items/<id>/). "
        "1-128 of [A-Za-z0-9._-], not starting with a dot.",
    )
    image: str = Field(
        min_length=1,
        description="The portrait: a local path, file:// or s3:// (any fsspec URL). "
        "Relative paths resolve against the manifest's folder.",
    )
    audio: str = Field(
        min_length=1, description="The speech track (wav, mp3, flac, ...); paths as for image."
    )
    size: Literal[256, 512] = Field(256, description="Render resolution of the face model: 256 or 512.")
    preprocess: Literal["crop", "extcrop", "resize", "full", "extfull"] = Field(
        "crop",
        description="How the photo is cropped: crop/extcrop animate the face crop; full/extfull paste it "
        "back into the whole photo; resize animates the whole (already tight) photo.",
    )
    still: bool = Field(False, description="Keep the head still (less head motion; use with full).")
    pose_style: int = Field(0, ge=0, le=45, description="Head-motion style of PoseVAE, 0-45.")
    expression_scale: float = Field(
        1.0, ge=0.0, allow_inf_nan=False, description="Scale of the expression (mouth) motion, >= 0."
    )
    ref_eyeblink: str | None = Field(
        None, description="Optional reference for blinks (video or .npz of coefficients); paths as for image."
    )
    ref_pose: str | None = Field(
        None, description="Optional reference for head pose (video or .npz); paths as for image."
    )
    input_yaw: Angles | None = Field(None, description="Free-view yaw keyframes in degrees, each -90..90.")
    input_pitch: Angles | None = Field(
        None, description="Free-view pitch keyframes in degrees, each -90..90."
    )
    input_roll: Angles | None = Field(None, description="Free-view roll keyframes in degrees, each -90..90.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the row's blink and pose noise.")
    batch_size: int = Field(2, ge=1, le=64, description="Frames per generator batch (memory vs speed).")
    enhancer: Literal["none", "gfpgan"] = Field(
        "none",
        description="Face restoration of every rendered frame: none, or gfpgan (GFPGAN v1.4; needs "
        "GFPGANv1.4.pth with official weights; several times the render's time per frame).",
    )

    @field_validator("pose_style", "seed", "batch_size", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1: a boolean column would render pose style 1 without a word.
        if type(value).__name__ in ("bool", "bool_"):
            raise ValueError(f"Input should be a valid integer, not a boolean ({value!r})")
        return value

    def to_options(self, **overrides: Any) -> RenderOptions:
        """The row's :class:`RenderOptions`; ``overrides`` set worker fields (``device``, ``dtype``) and
        replace ``ref_eyeblink`` / ``ref_pose`` URIs by local paths."""
        values = self.model_dump(include=OPTION_COLUMNS)
        for name in ("input_yaw", "input_pitch", "input_roll"):
            if values[name] is not None:
                values[name] = tuple(values[name])
        values.update(overrides)
        return RenderOptions(**values)


REQUIRED_COLUMNS: tuple[str, ...] = ("id", "image", "audio")
#: Columns holding file references (resolved against the manifest's folder).
URI_COLUMNS: tuple[str, ...] = ("image", "audio", "ref_eyeblink", "ref_pose")
#: Columns that are render options (the fields shared with RenderOptions).
OPTION_COLUMNS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(RenderOptions)) & frozenset(
    ManifestRow.model_fields
)


def column_kind(name: str) -> Literal["str", "int", "float", "bool", "list"]:
    """The storage kind of column ``name`` (for building Parquet files and parsing CSV cells)."""
    base = ManifestRow.model_fields[name].annotation
    if get_origin(base) in (Union, UnionType):  # X | None
        base = next(a for a in get_args(base) if a is not type(None))
    while get_origin(base) is Annotated:
        base = get_args(base)[0]
    if get_origin(base) is list:
        return "list"
    if get_origin(base) is Literal:
        base = type(get_args(base)[0])
    return {int: "int", float: "float", bool: "bool"}.get(base, "str")
