"""Manifest validation: every problem of every row at once, before any model work.

A problem is ``(row, id, column, problem)``; ``row`` is the 0-based row number in the Parquet file
(``None`` for the manifest as a whole, e.g. an unknown column, which makes every row invalid: its values
would otherwise be silently ignored). Invalid rows fail on their own; the valid ones come back with their
file references resolved against the manifest's folder.

**Allowed input prefixes.** A manifest names files the worker will open, so every file reference (``image``,
``audio``, ``ref_eyeblink``, ``ref_pose``) must lie under one of the allowed prefixes, else its row is
invalid (``outside the allowed input prefixes``) and the file is neither opened nor probed. Default: the
manifest's own folder tree. Local paths are compared after resolving ``..`` and symlinks (a link out of the
tree is outside); fsspec URLs are compared normalised (``s3://bkt/media/`` allows ``s3://bkt/media/a.png``,
not ``s3://bkt/media-old/a.png`` nor ``s3://bkt/media/../private/a.png``). :data:`ANY_PATH` (``*``) allows
any path: the explicit opt-out for one-machine use (``--allow-any-path``).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from manifests.schema import REQUIRED_COLUMNS, URI_COLUMNS, ManifestRow
from sadtalker import storage, uris
from sadtalker.errors import InputError
from sadtalker.inputs import ANY_PATH, OUTSIDE, canonical, is_allowed
from sadtalker.redaction import redact

__all__ = [
    "ANY_PATH",
    "InvalidRow",
    "ManifestError",
    "Problem",
    "ValidationReport",
    "allowed_input_prefixes",
    "validate_manifest",
    "validate_records",
]

_PANDAS_INDEX_PREFIX = "__index_level_"


class ManifestError(InputError):
    """The manifest itself cannot be read (missing, not Parquet)."""


@dataclass(frozen=True)
class Problem:
    """One problem: row number (``None``: the whole manifest), row id, column, and what is wrong."""

    row: int | None
    id: str | None
    column: str | None
    problem: str

    def __str__(self) -> str:
        where = "manifest" if self.row is None else f"row {self.row}" + (f" ({self.id})" if self.id else "")
        return f"{where}, {self.column or '-'}: {self.problem}"


@dataclass(frozen=True)
class InvalidRow:
    """A row that failed validation, with all its problems."""

    row: int
    id: str | None
    problems: tuple[str, ...]

    @property
    def error(self) -> str:
        """The problems as one line (the row's error in the batch results)."""
        return "invalid manifest row: " + "; ".join(self.problems)


@dataclass(frozen=True)
class ValidationReport:
    """What validation found: the valid rows (URIs resolved) and every problem."""

    manifest: str
    manifest_sha256: str
    num_rows: int
    rows: tuple[ManifestRow, ...]
    row_numbers: Mapping[str, int]
    invalid: tuple[InvalidRow, ...]
    problems: tuple[Problem, ...] = field(default=())
    allowed_prefixes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when there is no problem at all."""
        return not self.problems

    def format_problems(self, limit: int | None = None) -> str:
        """The problems as an aligned text table (row, id, column, problem)."""
        shown = list(self.problems if limit is None else self.problems[:limit])
        cells = [("row", "id", "column", "problem")] + [
            ("-" if p.row is None else str(p.row), p.id or "-", p.column or "-", p.problem) for p in shown
        ]
        widths = [max(len(c[i]) for c in cells) for i in range(3)]
        lines = ["  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3] for c in cells]
        if limit is not None and len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
        shown = repr(error["input"])
        message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    return str(redact(message))


def _read_table(uri: str) -> tuple[pa.Table, str]:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise ManifestError(redact(uri), "manifest not found") from exc
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(redact(uri), f"not a readable Parquet file: {exc}") from exc
    return table, hashlib.sha256(data).hexdigest()


def validate_manifest(
    uri: str, *, check_files: bool = True, allowed_prefixes: Sequence[str] | None = None
) -> ValidationReport:
    """Read the Parquet manifest at ``uri`` (any fsspec URL) and validate every row.

    With ``check_files``, every referenced file is checked to exist (in parallel).
    ``allowed_prefixes``: where referenced files may be (:func:`allowed_input_prefixes`); default: the
    manifest's own folder tree; ``["*"]``: anywhere.
    Raises :class:`ManifestError` when the file itself cannot be read.
    """
    table, digest = _read_table(uri)
    return validate_records(
        table.to_pylist(),
        columns=table.column_names,
        base=uris.parent(uri),
        manifest=uris.normalize(uri),
        manifest_sha256=digest,
        check_files=check_files,
        allowed_prefixes=allowed_prefixes,
    )


def validate_records(
    records: Sequence[Mapping[str, Any]],
    *,
    columns: Iterable[str] | None = None,
    base: str = ".",
    manifest: str = "<records>",
    manifest_sha256: str = "",
    check_files: bool = True,
    allowed_prefixes: Sequence[str] | None = None,
) -> ValidationReport:
    """Validate manifest rows given as dicts; relative file references resolve against folder ``base``.

    ``columns``: the manifest's columns (default: every key seen). Missing cells (None, NaN, and empty
    strings in optional columns) take the row model's defaults. ``allowed_prefixes``: where file references
    may point (default: ``base``'s tree; ``["*"]``: anywhere); a reference outside makes its row invalid and
    is not checked for existence.
    """
    allowed = allowed_input_prefixes(allowed_prefixes, base)
    seen = list(columns) if columns is not None else list(dict.fromkeys(k for r in records for k in r))
    seen = [c for c in seen if not c.startswith(_PANDAS_INDEX_PREFIX)]
    known = ManifestRow.model_fields
    table_problems = [Problem(None, None, c, "unknown column") for c in seen if c not in known]
    table_problems += [
        Problem(None, None, c, "required column is missing") for c in REQUIRED_COLUMNS if c not in seen
    ]

    per_row: dict[int, list[Problem]] = defaultdict(list)
    parsed: dict[int, ManifestRow] = {}
    raw_ids: dict[int, str | None] = {}
    for i, record in enumerate(records):
        raw_id = record.get("id")
        raw_ids[i] = None if _missing(raw_id) else str(raw_id)
        values = {
            k: v
            for k, v in record.items()
            if k in known and not _missing(v) and not (v == "" and k not in REQUIRED_COLUMNS)
        }
        try:
            parsed[i] = ManifestRow(**values)
        except ValidationError as exc:
            for err in exc.errors():
                column = str(err["loc"][0]) if err["loc"] else None
                if err["type"] == "missing" and column not in seen:
                    continue  # reported once for the whole manifest
                per_row[i].append(Problem(i, raw_ids[i], column, _describe(err)))

    for problem in _duplicate_ids(raw_ids):
        per_row[problem.row].append(problem)  # type: ignore[index]

    # File references: resolved against the manifest's folder, checked for every row (also rows with
    # other problems, so that one pass shows everything).
    files = {
        (i, column): uris.resolve(value, base)
        for i, record in enumerate(records)
        for column in URI_COLUMNS
        if isinstance(value := record.get(column), str) and value
    }
    outside = {
        (i, column): text
        for (i, column), uri in files.items()
        if (text := _outside(str(records[i][column]), uri, allowed)) is not None
    }
    for (i, column), text in sorted(outside.items(), key=lambda kv: (kv[0][0], URI_COLUMNS.index(kv[0][1]))):
        per_row[i].append(Problem(i, raw_ids[i], column, text))
    if check_files:
        inside = {k: uri for k, uri in files.items() if k not in outside}  # never probe a file outside
        for problem in _check_files(inside, raw_ids):
            per_row[problem.row].append(problem)  # type: ignore[index]
    resolved = {
        i: row.model_copy(update={c: files[(i, c)] for c in URI_COLUMNS if (i, c) in files})
        for i, row in parsed.items()
    }

    problems = list(table_problems)
    invalid: list[InvalidRow] = []
    valid: list[ManifestRow] = []
    row_numbers: dict[str, int] = {}
    for i in range(len(records)):
        mine = per_row.get(i, [])
        problems += mine
        if mine or table_problems:
            texts = [f"{p.column}: {p.problem}" for p in table_problems + mine]
            invalid.append(InvalidRow(i, raw_ids[i], tuple(texts)))
        else:
            valid.append(resolved[i])
            row_numbers[resolved[i].id] = i
    return ValidationReport(
        manifest=manifest,
        manifest_sha256=manifest_sha256,
        num_rows=len(records),
        rows=tuple(valid),
        row_numbers=row_numbers,
        invalid=tuple(invalid),
        problems=tuple(problems),
        allowed_prefixes=allowed,
    )


def allowed_input_prefixes(prefixes: Sequence[str] | None, base: str) -> tuple[str, ...]:
    """The allowed prefixes in the form :func:`validate_records` compares: ``None`` is ``base``'s tree (the
    manifest's folder); ``*`` anywhere (returned alone); local paths absolute (relative ones against the
    current directory) with symlinks resolved; URLs normalised.

    Raises:
        ValueError: an empty prefix (it would silently mean the current directory).
    """
    if prefixes is None:
        return (canonical(base),)
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    if any(not str(p).strip() for p in prefixes):
        raise ValueError("allowed_prefixes: an empty prefix; name folders or URLs, or '*' for any path")
    if ANY_PATH in (str(p).strip() for p in prefixes):
        return (ANY_PATH,)
    return tuple(dict.fromkeys(canonical(str(p).strip()) for p in prefixes))


def _outside(value: str, uri: str, allowed: Sequence[str]) -> str | None:
    """None when the cell ``value`` (``uri``: resolved against the manifest's folder) lies under one of
    ``allowed`` once symlinks are resolved, else the row's problem. (The workers apply the same rule again
    when they open the file: :func:`sadtalker.inputs.localize_input`.)"""
    real = canonical(uri)
    if is_allowed(real, allowed):
        return None
    shown = real if real == value else f"{value} (resolves to {real})"
    return str(
        redact(
            f"{OUTSIDE} ({', '.join(allowed) or 'none'}): {shown}; allow its location with --allow-prefix "
            "(flow parameter allowed_prefixes)"
        )
    )


def _duplicate_ids(raw_ids: Mapping[int, str | None]) -> list[Problem]:
    """A problem for every row whose id another row also has, exactly or up to case.

    Ids name output folders (``items/<id>/``); ``Alice`` and ``alice`` are one folder on case-insensitive
    storage (macOS and Windows disks, some S3 gateways and SMB shares), so one row would overwrite the
    other's outputs. Both rows are rejected, each naming the other.
    """
    by_folded: dict[str, list[int]] = defaultdict(list)
    for i, raw_id in raw_ids.items():
        if raw_id is not None:
            by_folded[raw_id.casefold()].append(i)
    problems = []
    for rows in by_folded.values():
        if len(rows) < 2:
            continue
        for i in rows:
            mine = raw_ids[i]
            same = [str(j) for j in rows if j != i and raw_ids[j] == mine]
            others: dict[str, list[str]] = defaultdict(list)
            for j in rows:
                if raw_ids[j] != mine:
                    others[raw_ids[j]].append(str(j))  # type: ignore[index]
            texts = [f"duplicate id (also in row {', '.join(same)})"] if same else []
            if others:
                spelled = ", ".join(
                    f"{other!r} (row{'s' if len(js) > 1 else ''} {', '.join(js)})"
                    for other, js in others.items()
                )
                texts.append(
                    f"id {mine!r} differs only in case from {spelled}: ids name output folders, which are "
                    "the same folder on case-insensitive storage"
                )
            problems.append(Problem(i, mine, "id", "; ".join(texts)))
    return problems


def _check_files(files: Mapping[tuple[int, str], str], ids: Mapping[int, str | None]) -> list[Problem]:
    """A problem for every referenced file that does not exist. Each distinct file is checked once (rows
    often share a photo), 16 at a time, in chunks of up to 256 per thread (one future per file would cost
    more than a local check: 100 000 rows' files are checked in about a second)."""

    def probe(chunk: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for uri in chunk:
            try:
                found[uri] = None if storage.exists(uri) else f"file not found: {redact(uri)}"
            except PermissionError as exc:
                found[uri] = f"cannot read {redact(uri)}: {redact(str(exc))}"
        return found

    distinct = sorted(set(files.values()))
    size = max(1, min(256, -(-len(distinct) // 16)))
    verdicts: dict[str, str | None] = {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        for found in pool.map(probe, [distinct[k : k + size] for k in range(0, len(distinct), size)]):
            verdicts.update(found)
    problems = [
        Problem(i, ids[i], column, text)
        for (i, column), uri in files.items()
        if (text := verdicts[uri]) is not None
    ]
    return sorted(problems, key=lambda p: (p.row, URI_COLUMNS.index(p.column or "image")))
