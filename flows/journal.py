"""The results journal: every finished row's result record, written while the batch runs.

A batch's ``results.parquet`` is written once, at the end. So that a crash of the flow process, or of the
storage, does not lose the results of the rows that finished before it, the flow also appends each finished
row's record to the batch's journal (layout: ``sadtalker.paths.BatchPaths.journal``)::

    <batch>/results.partial/part-<run>-<seq>.parquet

- a part holds the records of the rows that finished since the previous part: one is written every
  :data:`JOURNAL_ROWS` rows or :data:`JOURNAL_SECONDS` seconds (whichever comes first, and once more at
  the end), atomically through ``sadtalker.storage`` (local disk, S3, any fsspec store). A part that cannot
  be written (storage down) is kept in memory and tried again later; the flow never fails for it.
- columns: those of ``results.parquet`` (redacted like it), plus ``_qc_metrics`` (the row's QC figures, JSON,
  for ``qc.parquet``) and ``_fingerprint`` (what the row's result depends on that the flow can see: the row,
  the settings of the batch, the weight sets; :func:`row_fingerprint`).
- ``<run>`` sorts by the run's start time, so reading the parts in name order and keeping each row's last
  record gives the newest result of every row (:func:`read_journal`).
- a rerun of the batch (same batch id) takes the rows whose journaled record succeeded with the same
  fingerprint as they are, without running them again, and merges them into its results; the journal is
  removed once ``results.parquet`` and ``qc.parquet`` are written.
- ``sadtalker-batch results OUTPUT/BATCH_ID`` shows the journal when ``results.parquet`` is not there.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sadtalker import storage, uris
from sadtalker.paths import JOURNAL_PART_PREFIX, BatchPaths, journal_run_token
from sadtalker.redaction import redact

__all__ = [
    "FINGERPRINT",
    "JOURNAL_ROWS",
    "JOURNAL_SECONDS",
    "QC_METRICS",
    "ResultsJournal",
    "describe_unsaved",
    "journal_parts",
    "journal_records",
    "journal_schema",
    "read_journal",
    "remove_journal",
    "row_fingerprint",
    "settings_digest",
]

#: A part is written when this many finished rows wait for one ...
JOURNAL_ROWS = 500
#: ... or when the oldest finished row has waited this many seconds (so a crash loses at most that much).
JOURNAL_SECONDS = 10.0
#: Journal-only columns: the row's QC figures (JSON) and its fingerprint.
QC_METRICS = "_qc_metrics"
FINGERPRINT = "_fingerprint"
_READERS = 4

_log = logging.getLogger("sadtalker.batch.journal")


def journal_schema(schema: pa.Schema) -> pa.Schema:
    """The columns of a journal part: ``schema`` (that of ``results.parquet``) and the journal's own."""
    return schema.append(pa.field(QC_METRICS, pa.string())).append(pa.field(FINGERPRINT, pa.string()))


def settings_digest(settings: Mapping[str, Any]) -> str:
    """SHA-256 of ``settings`` (JSON, keys sorted): the batch-wide part of every row's fingerprint."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def row_fingerprint(settings: str, row: Any) -> str:
    """What a row's result depends on that the flow can see: the batch's :func:`settings_digest` and the row
    itself (a ``ManifestRow``: inputs as resolved, every option). 32 hex digits."""
    return hashlib.sha256(f"{settings}\n{row.model_dump_json()}".encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """JSON for the odd numpy scalar among QC figures (``np.float32(0.5)`` -> 0.5)."""
    return value.item() if hasattr(value, "item") else str(value)


def _encode(record: Mapping[str, Any], names: list[str], fingerprint: str | None) -> dict[str, Any]:
    out = {c: record.get(c) for c in names}
    metrics = record.get(QC_METRICS)
    out = redact(out)
    # JSON has no NaN/inf: they are kept as Python's json writes them (NaN, Infinity), which it reads back.
    out[QC_METRICS] = None if metrics is None else redact(json.dumps(metrics, sort_keys=True, default=_plain))
    out[FINGERPRINT] = fingerprint
    return out


class ResultsJournal:
    """The writer of one run's journal parts (see the module docstring).

    :meth:`add` a finished row's record; :meth:`flush_if_due` after each row and whenever the flow waits
    :meth:`due_in` seconds without a row finishing; :meth:`flush` at the end. A write that fails keeps its
    records for the next try (:attr:`error` says why) and never raises.
    """

    def __init__(
        self,
        paths: BatchPaths,
        schema: pa.Schema,
        rows: int = JOURNAL_ROWS,
        seconds: float = JOURNAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.paths, self.rows, self.seconds, self._clock = paths, max(int(rows), 1), float(seconds), clock
        self.schema = journal_schema(schema)
        self._names = list(schema.names)
        self.run = journal_run_token()
        self._pending: list[dict[str, Any]] = []
        self._oldest: float | None = None  # when the oldest pending record was added
        self._retry_at = 0.0  # after a failed write: not before this
        self._seq = 0
        self.saved = 0  # rows of this run in parts written
        self.parts = 0
        self.error: str | None = None  # why the last write failed (None after a good one)

    @property
    def uri(self) -> str:
        return self.paths.journal

    @property
    def pending(self) -> int:
        """Records added but not yet in a written part."""
        return len(self._pending)

    def pending_table(self) -> pa.Table | None:
        """The records not yet in a written part, as a table of the journal's columns (None: none)."""
        return pa.Table.from_pylist(self._pending, schema=self.schema) if self._pending else None

    def add(self, record: Mapping[str, Any], fingerprint: str | None = None) -> None:
        """Queue a finished row's result record (``_qc_metrics``: its QC figures, as the flow keeps them)."""
        self._pending.append(_encode(record, self._names, fingerprint))
        if self._oldest is None:
            self._oldest = self._clock()

    def due_in(self) -> float | None:
        """Seconds until a part is due (0: now); None when nothing waits."""
        if not self._pending or self._oldest is None:
            return None
        if len(self._pending) >= self.rows:
            return max(self._retry_at - self._clock(), 0.0)
        due = max(self._oldest + self.seconds, self._retry_at)
        return max(due - self._clock(), 0.0)

    def flush_if_due(self) -> bool:
        """Write a part when one is due; returns False only when a write was tried and failed."""
        due = self.due_in()
        return True if due is None or due > 0 else self.flush()

    def flush(self) -> bool:
        """Write every pending record as one part now; True when nothing is left pending."""
        if not self._pending:
            return True
        uri = self.paths.journal_part(self.run, self._seq)
        try:
            storage.write_parquet(uri, pa.Table.from_pylist(self._pending, schema=self.schema))
        except Exception as exc:  # storage down, or a record that does not fit: keep it, say why
            self.error = str(redact(f"{type(exc).__name__}: {exc}"))
            self._retry_at = self._clock() + self.seconds
            _log.warning(
                "results journal: could not write %s (%d rows kept for the next try): %s",
                redact(uri),
                len(self._pending),
                self.error,
            )
            return False
        self.saved += len(self._pending)
        self.parts += 1
        self._seq += 1
        self._pending = []
        self._oldest, self._retry_at, self.error = None, 0.0, None
        return True


def journal_parts(paths: BatchPaths) -> list[str]:
    """URIs of the batch's journal parts, oldest first (every run's)."""
    fs, path = storage.filesystem(paths.journal)
    fs.invalidate_cache(path)
    try:
        names = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    parts = sorted(
        base
        for name in names
        if (base := posixpath.basename(str(name).rstrip("/"))).startswith(JOURNAL_PART_PREFIX)
        and base.endswith(".parquet")
    )
    return [uris.join(paths.journal, base) for base in parts]


def read_journal(
    paths: BatchPaths, schema: pa.Schema | None = None, newest: pa.Table | None = None, strict: bool = False
) -> pa.Table | None:
    """Every row's newest journaled record (parts read in name order, the last record of each row id kept),
    sorted by row number; None when there is no journal. ``schema``: add its columns missing from older
    parts (as nulls). ``newest``: records newer than every part (those a journal could not write yet).
    Listing errors raise; a part that cannot be read raises with ``strict`` (the final tables: a skipped
    part would lose its rows), else it is skipped with a warning (resume: its rows simply run again)."""
    parts = journal_parts(paths)
    if not parts and newest is None:
        return None

    def read(uri: str) -> pa.Table | None:
        try:
            return pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        except Exception as exc:
            if strict:
                raise OSError(f"results journal part {redact(uri)} unreadable: {exc}") from exc
            _log.warning("results journal: skipping unreadable part %s: %s", redact(uri), exc)
            return None

    context = contextvars.copy_context()  # the readers keep the caller's storage timeouts (io_scope)
    with ThreadPoolExecutor(max_workers=max(min(_READERS, len(parts)), 1)) as pool:
        tables = [
            t for t in pool.map(lambda u: context.copy().run(read, u), parts) if t is not None and t.num_rows
        ]
    if newest is not None and newest.num_rows:
        tables.append(newest)
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")  # chunks side by side: no copy
    del tables
    for field in schema or ():
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    # The position of each id's newest record, in row order: one take (one copy of the records) in all.
    positions = pa.table({"id": table["id"], "_order": pa.array(range(table.num_rows), pa.int64())})
    last = positions.group_by("id", use_threads=False).aggregate([("_order", "max")]).column("_order_max")
    last = pc.take(last, pc.sort_indices(pc.take(table["row"], last)))
    table = table.take(last)
    pa.default_memory_pool().release_unused()  # the parts' buffers: give them back before the next step
    return table


def journal_records(table: pa.Table, batch_rows: int = 4096) -> Iterator[dict[str, Any]]:
    """The records of a :func:`read_journal` table as result dicts (``_qc_metrics`` parsed back), streamed."""
    for batch in table.to_batches(max_chunksize=batch_rows):
        for record in batch.to_pylist():
            metrics = record.get(QC_METRICS)
            record[QC_METRICS] = None if metrics is None else json.loads(metrics)
            yield record


def remove_journal(paths: BatchPaths) -> int:
    """Delete every journal part (once ``results.parquet`` holds them); returns how many were removed."""
    parts = journal_parts(paths)
    if not parts:
        return 0
    fs, _ = storage.filesystem(paths.journal)
    fs.rm([storage.filesystem(uri)[1] for uri in parts])
    if uris.is_local(paths.journal):
        with contextlib.suppress(OSError):  # not empty (a part written meanwhile) or already gone
            fs.rmdir(storage.filesystem(paths.journal)[1])
    return len(parts)


def describe_unsaved(journal: ResultsJournal) -> str:
    """A phrase for messages: what of this run's results is in no written part, and why."""
    if not journal.pending:
        return "nothing else: every finished row's results are in the journal"
    return f"the results of {journal.pending} row(s) of this run ({journal.error or 'not written yet'})"
