"""Manifest validation: every problem of every row at once, before any model work.

A problem is ``(row, id, column, problem)``; ``row`` is the 0-based row number in the Parquet file
(``None`` for the manifest as a whole, e.g. an unknown column, which makes every row invalid: its values
would otherwise be silently ignored). Invalid rows fail on their own; the valid ones come back with their
file references resolved against the manifest's folder.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from manifests.schema import REQUIRED_COLUMNS, URI_COLUMNS, ManifestRow
from sadtalker import storage
from sadtalker.errors import InputError

__all__ = [
    "InvalidRow",
    "ManifestError",
    "Problem",
    "ValidationReport",
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
    return str(storage.redact(message))


def _read_table(uri: str) -> tuple[pa.Table, str]:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise ManifestError(storage.redact(uri), "manifest not found") from exc
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(storage.redact(uri), f"not a readable Parquet file: {exc}") from exc
    return table, hashlib.sha256(data).hexdigest()


def validate_manifest(uri: str, *, check_files: bool = True) -> ValidationReport:
    """Read the Parquet manifest at ``uri`` (any fsspec URL) and validate every row.

    With ``check_files``, every referenced file is checked to exist (in parallel).
    Raises :class:`ManifestError` when the file itself cannot be read.
    """
    table, digest = _read_table(uri)
    return validate_records(
        table.to_pylist(),
        columns=table.column_names,
        base=storage.parent(uri),
        manifest=storage.normalize(uri),
        manifest_sha256=digest,
        check_files=check_files,
    )


def validate_records(
    records: Sequence[Mapping[str, Any]],
    *,
    columns: Iterable[str] | None = None,
    base: str = ".",
    manifest: str = "<records>",
    manifest_sha256: str = "",
    check_files: bool = True,
) -> ValidationReport:
    """Validate manifest rows given as dicts; relative file references resolve against folder ``base``.

    ``columns``: the manifest's columns (default: every key seen). Missing cells (None, NaN, and empty
    strings in optional columns) take the row model's defaults.
    """
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
    uris = {
        (i, column): storage.resolve(value, base)
        for i, record in enumerate(records)
        for column in URI_COLUMNS
        if isinstance(value := record.get(column), str) and value
    }
    if check_files:
        for problem in _check_files(uris, raw_ids):
            per_row[problem.row].append(problem)  # type: ignore[index]
    resolved = {
        i: row.model_copy(update={c: uris[(i, c)] for c in URI_COLUMNS if (i, c) in uris})
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


def _check_files(uris: Mapping[tuple[int, str], str], ids: Mapping[int, str | None]) -> list[Problem]:
    """A problem for every referenced file that does not exist (checked 16 at a time)."""

    def check(item: tuple[tuple[int, str], str]) -> Problem | None:
        (i, column), uri = item
        try:
            if storage.exists(uri):
                return None
            return Problem(i, ids[i], column, f"file not found: {storage.redact(uri)}")
        except PermissionError as exc:
            return Problem(
                i, ids[i], column, f"cannot read {storage.redact(uri)}: {storage.redact(str(exc))}"
            )

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = [p for p in pool.map(check, sorted(uris.items())) if p is not None]
    return sorted(found, key=lambda p: (p.row, URI_COLUMNS.index(p.column or "image")))


def main(argv: Sequence[str] | None = None, prog: str = "python -m manifests.validate") -> int:
    """``python -m manifests.validate MANIFEST [--no-check-files]``: print every problem; exit 1 if any."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description="Validate a manifest: every problem of every row."
    )
    parser.add_argument("manifest", help="Parquet manifest (path or fsspec URL)")
    parser.add_argument("--no-check-files", action="store_true", help="do not check that files exist")
    args = parser.parse_args(argv)
    try:
        report = validate_manifest(args.manifest, check_files=not args.no_check_files)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report.num_rows} rows, {len(report.rows)} valid, {len(report.invalid)} invalid")
    if report.problems:
        print(report.format_problems())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
