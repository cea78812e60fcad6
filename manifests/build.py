"""Build a Parquet manifest from a CSV file, a JSON list of objects, or a folder of photo-speech pairs.

```
sadtalker-batch build-manifest pairs.csv  -o manifest.parquet
sadtalker-batch build-manifest rows.json  -o s3://bucket/batches/manifest.parquet
sadtalker-batch build-manifest photos_and_speech/ -o manifest.parquet --set size=512 --set still=true
```

- CSV: one header row with manifest column names; empty cells take the defaults; list columns
  (``input_yaw`` ...) as ``[-20, 30]``, ``-20;30`` or ``-20 30``; booleans as true/false/yes/no/1/0.
- JSON: a list of objects with manifest column names.
- Folder: every image (png, jpg, jpeg, webp, bmp) with an audio file of the same stem (wav, mp3, flac, ogg,
  m4a) is a row; the id is the stem (unsafe characters replaced by ``-``); unpaired files are reported.

Relative file references are rewritten relative to the output manifest's folder (absolute URLs when the
manifest goes to another store). ``--set KEY=VALUE`` fills a column for every row that has no value. The
result is validated like any manifest; nothing is written while a problem remains.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.schema import URI_COLUMNS, ManifestRow, column_kind
from manifests.validate import ANY_PATH, ValidationReport, validate_records
from sadtalker import storage, uris
from sadtalker.options import parse_angles
from sadtalker.redaction import redact

__all__ = [
    "AUDIO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ManifestBuildError",
    "build_manifest",
    "records_from_csv",
    "records_from_folder",
    "records_from_json",
    "write_manifest",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
_ARROW_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list": pa.list_(pa.float64()),
}


class ManifestBuildError(ValueError):
    """The rows do not make a valid manifest; ``report`` holds every problem."""

    def __init__(self, report: ValidationReport, extra: Sequence[str] = ()):
        self.report = report
        self.extra = tuple(extra)
        lines = [*self.extra, report.format_problems()] if report.problems else list(self.extra)
        super().__init__("manifest not written:\n" + "\n".join(lines))


def parse_cell(column: str, text: str) -> Any:
    """A CSV cell as the Python value of ``column`` (None for an empty cell; the raw text when it does not
    parse, so validation reports it)."""
    text = text.strip()
    if text == "":
        return None
    if column not in ManifestRow.model_fields:
        return text
    kind = column_kind(column)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[
                text.lower()
            ]
        if kind == "list":
            return parse_angles(text)
    except (ValueError, KeyError, TypeError):
        return text
    return text


def _rebase(value: str, source_dir: str, manifest_dir: str) -> str:
    """A file reference written relative to ``source_dir``, rewritten for a manifest in ``manifest_dir``."""
    absolute = uris.resolve(value, source_dir)
    if uris.is_local(absolute) and uris.is_local(manifest_dir):
        return os.path.relpath(absolute, uris.local_path(manifest_dir))
    return absolute


def _rebase_records(
    records: list[dict[str, Any]], source_dir: str, manifest_dir: str
) -> list[dict[str, Any]]:
    out = []
    for record in records:
        row = dict(record)
        for column in URI_COLUMNS:
            if isinstance(row.get(column), str) and row[column]:
                row[column] = _rebase(row[column], source_dir, manifest_dir)
        out.append(row)
    return out


def records_from_csv(uri: str) -> list[dict[str, Any]]:
    """Rows of a CSV file (header = column names), cells parsed with :func:`parse_cell`."""
    text = storage.read_bytes(uri).decode("utf-8-sig")
    return [
        {k.strip(): parse_cell(k.strip(), v or "") for k, v in row.items() if k is not None}
        for row in csv.DictReader(io.StringIO(text))
    ]


def records_from_json(uri: str) -> list[dict[str, Any]]:
    """Rows of a JSON file holding a list of objects."""
    data = json.loads(storage.read_bytes(uri).decode("utf-8"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{redact(uri)}: expected a JSON list of objects")
    return [dict(r) for r in data]


def records_from_folder(uri: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per image + audio pair of the same stem in folder ``uri`` (not recursive).

    Returns the rows (absolute references, ids from the stems) and the names of unpaired files.
    """
    fs, path = storage.filesystem(uri)
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    images: dict[str, str] = {}
    audios: dict[str, str] = {}
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(stem, name)
        elif suffix.lower() in AUDIO_SUFFIXES:
            audios.setdefault(stem, name)
    records = [
        {
            "id": re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip(".") or "row",
            "image": uris.join(uri, images[stem]),
            "audio": uris.join(uri, audios[stem]),
        }
        for stem in sorted(images.keys() & audios.keys())
    ]
    unpaired = sorted(images[s] for s in images.keys() - audios.keys())
    unpaired += sorted(audios[s] for s in audios.keys() - images.keys())
    return records, unpaired


def write_manifest(
    records: Sequence[Mapping[str, Any]], out: str, *, check_files: bool = True
) -> ValidationReport:
    """Validate ``records`` (references relative to ``out``'s folder) and write them to Parquet ``out``.

    Columns get their manifest types; only the columns present in some row are written (the others keep
    their defaults). Raises :class:`ManifestBuildError` with every problem instead of writing. Files
    anywhere may be named: the allowed input prefixes are checked where a manifest is read to be run
    (``validate``, ``run``, ``submit``), against the prefixes of that run.
    """
    report = validate_records(
        records,
        base=uris.parent(out),
        manifest=uris.normalize(out),
        check_files=check_files,
        allowed_prefixes=[ANY_PATH],
    )
    if report.problems:
        raise ManifestBuildError(report)
    columns = list(dict.fromkeys(k for r in records for k in r))
    schema = pa.schema([(c, _ARROW_TYPES[column_kind(c)]) for c in columns])
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records], schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(out, sink.getvalue())
    return report


def build_manifest(
    source: str,
    out: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    source_format: str | None = None,
    check_files: bool = True,
) -> ValidationReport:
    """Build Parquet manifest ``out`` from ``source`` (CSV, JSON list, or folder of pairs).

    ``source_format``: ``csv``, ``json`` or ``folder`` (default: from the suffix; a folder otherwise).
    ``defaults``: column values for rows that have none. Raises :class:`ManifestBuildError`.
    """
    fmt = source_format or _guess_format(source)
    unpaired: list[str] = []
    if fmt == "csv":
        records = records_from_csv(source)
    elif fmt == "json":
        records = records_from_json(source)
    elif fmt == "folder":
        records, unpaired = records_from_folder(source)
    else:
        raise ValueError(f"unknown source format {fmt!r} (csv, json or folder)")
    source_dir = source if fmt == "folder" else uris.parent(source)
    records = _rebase_records(records, source_dir, uris.parent(out))
    for record in records:
        for column, value in (defaults or {}).items():
            if record.get(column) is None:
                record[column] = value
    if not records:
        raise ValueError(
            f"{redact(source)}: no rows found" + (f" (unpaired: {unpaired})" if unpaired else "")
        )
    report = write_manifest(records, out, check_files=check_files)
    if unpaired:
        print(f"warning: files without a partner, left out: {', '.join(unpaired)}", file=sys.stderr)
    return report


def _guess_format(source: str) -> str:
    lower = source.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".json"):
        return "json"
    return "folder"
