"""The one typed model of a manifest row (a Parquet row = one video).

A row is a photo-speech pair (``id``, ``image``, ``audio``) and the options of its video: the columns of
:class:`sadtalker.options.RowOptions`, declared there once (names, types, defaults, ranges, descriptions),
so a row turns into the options of its video with :meth:`ManifestRow.to_options`. Unknown columns and
out-of-range values are errors. ``device`` and ``dtype`` are not row options: they belong to the worker
that runs the row (flow parameters).
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from sadtalker.options import RenderOptions, RowOptions

__all__ = ["ID_PATTERN", "OPTION_COLUMNS", "REQUIRED_COLUMNS", "URI_COLUMNS", "ManifestRow", "column_kind"]

#: Row ids name output folders: letters, digits, ``.``, ``_``, ``-``; no leading dot (see sadtalker.paths).
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"


class RowInputs(BaseModel):
    """The required columns: a row's id and its photo-speech pair."""

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


# pydantic orders the fields of the last base first: id, image, audio, then the options. That order is the
# order of a row's problems and of its JSON (the results journal's row fingerprints).
class ManifestRow(RowOptions, RowInputs):
    """One photo-speech pair and the options of its video."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_options(self, **overrides: Any) -> RenderOptions:
        """The row's :class:`RenderOptions`; ``overrides`` set worker fields (``device``, ``dtype``) and
        replace ``ref_eyeblink`` / ``ref_pose`` URIs by local paths."""
        return RenderOptions(**{**self.model_dump(include=OPTION_COLUMNS), **overrides})


REQUIRED_COLUMNS: tuple[str, ...] = tuple(RowInputs.model_fields)
#: Columns holding file references (resolved against the manifest's folder).
URI_COLUMNS: tuple[str, ...] = ("image", "audio", "ref_eyeblink", "ref_pose")
#: Columns that are render options.
OPTION_COLUMNS: frozenset[str] = frozenset(RowOptions.model_fields)


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
