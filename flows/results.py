"""A batch's results: the columns of ``results.parquet``, the running tally of finished rows, and the final
table built from the results journal.

The flow keeps no row's full record once it is journaled (``flows.journal``): memory in the row loop does
not grow with the manifest. What it keeps per batch is a :class:`BatchTally` (counts, the weight labels and
the first failures: a few hundred bytes whatever the size). At the end, :func:`final_table` reads the
journal back (every run's parts, newest record per row id) as one Arrow table, columnar and compact, from
which ``results.parquet``, ``qc.parquet``, the artifacts and the worst items are taken.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flows.journal import FINGERPRINT, ResultsJournal, journal_schema, read_journal
from sadtalker.paths import BatchPaths
from sadtalker.redaction import redact

__all__ = [
    "QC_COLUMNS",
    "RESULT_SCHEMA",
    "BatchTally",
    "empty_result",
    "final_table",
    "records",
    "worst_records",
]

#: Columns of ``results.parquet`` (one row per manifest row, in manifest order).
RESULT_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("status", pa.string()),  # succeeded | failed
        ("failed_stage", pa.string()),  # validate | face | coeffs | render | qc
        ("error", pa.string()),
        ("image", pa.string()),
        ("audio", pa.string()),
        ("image_sha256", pa.string()),
        ("audio_sha256", pa.string()),
        ("face_key", pa.string()),
        ("coeffs_key", pa.string()),
        ("render_key", pa.string()),
        ("video_uri", pa.string()),
        ("face_uri", pa.string()),
        ("coeffs_uri", pa.string()),
        ("qc_uri", pa.string()),
        ("num_faces", pa.int64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("audio_seconds", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("video_bytes", pa.int64()),
        ("qc_verdict", pa.string()),  # pass | warn | fail (fail: the row's status is failed, stage qc)
        ("qc_problems", pa.string()),
        ("qc_protocol", pa.string()),
        ("synthetic_weights", pa.bool_()),
        ("weights", pa.string()),  # the label of exactly the files loaded: official:<sha12>+<sha12>
        ("landmark_backend", pa.string()),  # face-alignment | dlib: the landmarker that found the face
        ("device", pa.string()),
        ("compiled", pa.bool_()),  # rendered through torch.compile (the row's render.json says the same)
        ("face_reused", pa.bool_()),
        ("coeffs_reused", pa.bool_()),
        ("render_reused", pa.bool_()),
        ("qc_reused", pa.bool_()),
        ("face_s", pa.float64()),
        ("coeffs_s", pa.float64()),
        ("render_s", pa.float64()),
        ("render_wait_s", pa.float64()),
        ("seconds_per_frame", pa.float64()),
        ("qc_s", pa.float64()),
        ("total_s", pa.float64()),
    ]
)
#: Leading columns of ``qc.parquet`` (one row per row that has a video); every QC metric follows as a
#: column of its own (``<metric>`` and ``<metric>__verdict``), then ``thresholds`` (JSON).
QC_COLUMNS = (
    "row",
    "id",
    "qc_verdict",
    "qc_problems",
    "qc_protocol",
    "weights",
    "num_frames",
    "duration_s",
    "audio_seconds",
    "width",
    "height",
    "video_bytes",
    "video_uri",
)
_REUSED = ("face_reused", "coeffs_reused", "render_reused", "qc_reused")
_VERDICT_RANK = {"fail": 1, "warn": 2}


def empty_result(number: int, row_id: str | None, image: Any = None, audio: Any = None) -> dict[str, Any]:
    """A result record with every column empty but the row's number, id and inputs (redacted)."""
    result: dict[str, Any] = dict.fromkeys(RESULT_SCHEMA.names)
    result.update(row=number, id=row_id, image=redact(image), audio=redact(audio))
    return result


@dataclass
class BatchTally:
    """What the flow keeps of the rows that ended: counts, the weight labels, and the ``keep`` failed rows
    with the lowest row numbers (``(id, stage, error)`` in manifest order). Its size does not depend on the
    number of rows."""

    keep: int = 50
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    reused: int = 0
    resumed: int = 0
    qc: dict[str, int] = field(default_factory=lambda: {"pass": 0, "warn": 0, "fail": 0})
    synthetic: set[bool] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    _failures: list[tuple[int, str, str, str]] = field(default_factory=list)  # max-heap by -row

    def add(self, record: Mapping[str, Any], resumed: bool = False) -> None:
        """Count one row's result record (``resumed``: taken from an earlier run's journal)."""
        self.total += 1
        self.resumed += bool(resumed)
        self.reused += bool(record.get("render_reused"))
        if record.get("qc_verdict") in self.qc:
            self.qc[record["qc_verdict"]] += 1
        if record.get("synthetic_weights") is not None:
            self.synthetic.add(bool(record["synthetic_weights"]))
        if record.get("weights"):
            self.weights.add(str(record["weights"]))
        if record.get("status") != "failed":
            self.succeeded += 1
            return
        self.failed += 1
        self.invalid += record.get("failed_stage") == "validate"
        entry = (-int(record.get("row") or 0), str(record.get("id")), str(record.get("failed_stage")))
        item = (*entry, str(record.get("error")))
        if len(self._failures) < self.keep:
            heapq.heappush(self._failures, item)
        elif item[0] > self._failures[0][0]:  # a lower row number than the highest one kept
            heapq.heapreplace(self._failures, item)

    @property
    def failures(self) -> tuple[tuple[str, str, str], ...]:
        """``(id, stage, error)`` of the first failed rows, in manifest order."""
        return tuple((i, s, e) for _, i, s, e in sorted(self._failures, reverse=True))

    @property
    def weights_kind(self) -> str:
        """official | synthetic | mixed | none: the kind of weights the rows were rendered with."""
        kinds = {frozenset(): "none", frozenset({True}): "synthetic", frozenset({False}): "official"}
        return kinds.get(frozenset(self.synthetic), "mixed")

    def counts(self) -> dict[str, int]:
        """The counts of ``batch.json``."""
        counts = {"succeeded": self.succeeded, "failed": self.failed, "invalid": self.invalid}
        counts.update({f"qc_{verdict}": n for verdict, n in self.qc.items()})
        return counts


def final_table(
    paths: BatchPaths,
    journal: ResultsJournal,
    row_numbers: Mapping[str, int],
    invalid: Iterable[Mapping[str, Any]],
    resumed: Iterable[str] = (),
) -> pa.Table:
    """Every row's result, in manifest order: the columns of :data:`RESULT_SCHEMA` plus ``_qc_metrics``.

    The rows that ran come from the results journal: every run's parts and what ``journal`` could not write
    yet, the newest record of each row id, restricted to the ids of this manifest (``row_numbers``: id ->
    row number, which the records take). ``resumed``: ids taken from an earlier run's journal, marked as
    reused. ``invalid``: the records of the manifest's invalid rows (not journaled).

    Raises:
        OSError (or the store's error): the journal cannot be listed, or one of its parts cannot be read
            (never skipped here: its rows would be missing from results.parquet, and the journal removed).
    """
    schema = journal_schema(RESULT_SCHEMA)
    table = read_journal(paths, RESULT_SCHEMA, newest=journal.pending_table(), strict=True)
    if table is None:
        table = schema.empty_table()
    table = table.select(schema.names).cast(schema)
    ids = pa.array(list(row_numbers), pa.string())
    known = pc.is_in(table["id"], value_set=ids)
    if not pc.all(known).as_py():  # records of ids that are not in this manifest (copies: only then)
        table = table.filter(known)
    numbers = pa.array(list(row_numbers.values()), pa.int64())
    table = table.set_column(0, "row", pc.take(numbers, pc.index_in(table["id"], value_set=ids)))
    resumed = pa.array(list(resumed), pa.string())
    if len(resumed):
        taken = pc.is_in(table["id"], value_set=resumed)
        for name in _REUSED:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pc.if_else(taken, True, table[name]))
    bad = [{**dict.fromkeys(schema.names), **r} for r in invalid]
    if bad:
        table = pa.concat_tables([table, pa.Table.from_pylist(bad, schema=schema)])
    table = table.drop_columns([FINGERPRINT])
    row = table["row"].combine_chunks()
    if len(row) > 1 and not pc.all(pc.less(row[:-1], row[1:])).as_py():  # sort (a copy) only when needed
        table = table.take(pc.sort_indices(row))
    return table


def records(table: pa.Table, batch_rows: int = 4096) -> Iterable[dict[str, Any]]:
    """The rows of a :func:`final_table` as result dicts (``_qc_metrics`` parsed back), streamed."""
    from flows.journal import journal_records

    return journal_records(table, batch_rows)


def worst_records(table: pa.Table, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` worst rows of a :func:`final_table`: failures before a QC verdict (validate, face,
    coeffs, render), then QC failures, then QC warnings; manifest order within each group."""
    failed = pc.equal(table["status"], "failed")
    early = pc.and_(failed, pc.invert(pc.fill_null(pc.equal(table["failed_stage"], "qc"), False)))
    verdict_rank = pc.fill_null(
        pc.if_else(
            pc.equal(table["qc_verdict"], "fail"),
            _VERDICT_RANK["fail"],
            pc.if_else(pc.equal(table["qc_verdict"], "warn"), _VERDICT_RANK["warn"], 3),
        ),
        3,
    )
    rank = pc.if_else(early, 0, verdict_rank)
    ranked = table.append_column("_rank", rank).filter(pc.or_(failed, pc.less(rank, 3)))
    ranked = ranked.take(pc.sort_indices(ranked, [("_rank", "ascending"), ("row", "ascending")])[:limit])
    return list(records(ranked.drop_columns(["_rank"])))
