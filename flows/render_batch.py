"""The ``render-batch`` flow: a Parquet manifest of photo-speech pairs in, one talking-head video per row out.

1. ``load_manifest`` validates every row first (``strict``: any problem fails the batch before any model
   work; otherwise invalid rows get status ``failed`` and the valid ones go on).
2. Each valid row is submitted as a chain of tasks: face -> coefficients -> render -> QC. Tasks exchange
   small records (URIs, hashes, timings); every artefact is content-addressed or carries its key, so a
   rerun of an interrupted batch does only what is missing (``force`` recomputes everything).
3. A failing row never fails the batch: its first failing stage and error go into ``results.parquet``;
   the flow ends ``Completed`` and its summary (and the CLI's exit code) say how many rows failed.
4. Outputs (layout: ``sadtalker.paths``): ``<output>/<batch_id>/results.parquet``, ``qc.parquet`` and
   ``items/<id>/...``; artifacts: a progress artifact updated in place, a table with one row per manifest
   row and a markdown summary.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner
from tqdm import tqdm

from flows.runners import RunnerName, make_task_runner
from manifests.schema import ManifestRow
from manifests.validate import ValidationReport
from sadtalker import storage
from sadtalker.paths import BatchPaths, batch_id_for
from tasks import coefficients_task, extract_face_task, load_manifest, qc_task, render_task
from tasks.records import StageContext

__all__ = ["RESULT_SCHEMA", "STAGES", "BatchSummary", "StrictModeError", "render_batch"]

#: The stages of a row, in order (``failed_stage`` in the results; ``validate`` for invalid rows).
STAGES: tuple[str, ...] = ("face", "coeffs", "render", "qc")

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
        ("qc_status", pa.string()),
        ("qc_checks", pa.string()),
        ("synthetic_weights", pa.bool_()),
        ("device", pa.string()),
        ("face_reused", pa.bool_()),
        ("coeffs_reused", pa.bool_()),
        ("render_reused", pa.bool_()),
        ("face_s", pa.float64()),
        ("coeffs_s", pa.float64()),
        ("render_s", pa.float64()),
        ("render_wait_s", pa.float64()),
        ("seconds_per_frame", pa.float64()),
        ("qc_s", pa.float64()),
        ("total_s", pa.float64()),
    ]
)
_QC_COLUMNS = (
    "row",
    "id",
    "qc_status",
    "qc_checks",
    "num_frames",
    "duration_s",
    "audio_seconds",
    "width",
    "height",
    "video_bytes",
    "synthetic_weights",
    "video_uri",
)
_TABLE_COLUMNS = (
    "row",
    "id",
    "status",
    "failed_stage",
    "error",
    "num_frames",
    "duration_s",
    "qc_status",
    "render_reused",
    "total_s",
    "video_uri",
)
_TABLE_ROWS = 1000
_FAILURES_KEPT = 50


class StrictModeError(ValueError):
    """``strict=True`` and the manifest has problems: the batch fails before any model work."""


@dataclass(frozen=True)
class BatchSummary:
    """What a batch did. ``failures``: ``(id, stage, error)`` of the first failed rows."""

    batch_id: str
    batch_uri: str
    results_uri: str
    total: int
    succeeded: int
    failed: int
    invalid: int
    reused: int
    synthetic_weights: bool
    seconds: float
    failures: tuple[tuple[str, str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """True when every row succeeded."""
        return self.failed == 0


def _empty_result(number: int, row_id: str | None, image: Any = None, audio: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(RESULT_SCHEMA.names)
    result.update(row=number, id=row_id, image=storage.redact(image), audio=storage.redact(audio))
    return result


def _state_error(state: Any) -> str:
    """``Type: message`` of a failed task run (or the state's message when it did not raise)."""
    if state.is_failed() or state.is_crashed():
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, BaseException):
            return str(storage.redact(f"{type(exc).__name__}: {exc}"))
    return str(storage.redact(state.message or state.name or "did not complete"))


def _submit_row(runner: TaskRunner, row: ManifestRow, ctx: StageContext) -> dict[str, PrefectFuture[Any]]:
    """Submit the row's four tasks; each waits for its upstream futures (passed as parameters)."""
    face = runner.submit(extract_face_task, {"row": row, "ctx": ctx})
    coeffs = runner.submit(coefficients_task, {"row": row, "face": face, "ctx": ctx})
    render = runner.submit(render_task, {"row": row, "face": face, "coeffs": coeffs, "ctx": ctx})
    qc = runner.submit(qc_task, {"row": row, "render": render, "coeffs": coeffs, "ctx": ctx})
    return {"face": face, "coeffs": coeffs, "render": render, "qc": qc}


def _collect_row(number: int, row: ManifestRow, futures: Mapping[str, PrefectFuture[Any]]) -> dict[str, Any]:
    """The row's results: every completed stage's record, then the first failure (if any)."""
    result = _empty_result(number, row.id, row.image, row.audio)
    for stage in STAGES:
        future = futures[stage]
        future.wait()
        state = future.state
        if not state.is_completed():
            result.update(status="failed", failed_stage=stage, error=_state_error(state))
            break
        result.update(future.result().result_fields())
    else:
        result["status"] = "succeeded"
    result["total_s"] = sum(result[k] or 0.0 for k in ("face_s", "coeffs_s", "render_s", "qc_s"))
    return result


class _Progress:
    """A tqdm bar for the batch and a Prefect progress artifact updated in place (at most once a second)."""

    def __init__(self, total: int, batch_id: str, key: str):
        self.total, self.done, self._last = total, 0, 0.0
        self.artifact_id = create_progress_artifact(
            progress=0.0 if total else 100.0,
            key=f"{key}-progress",
            description=f"render-batch {batch_id}: rows done",
        )
        self.bar = tqdm(total=total, desc=f"batch {batch_id}", unit="row", disable=None, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= 1.0:
            update_progress_artifact(
                artifact_id=self.artifact_id, progress=100.0 * self.done / max(self.total, 1)
            )
            self._last = now

    def close(self) -> None:
        self.bar.close()


def _write_parquet(uri: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """``rows`` (redacted) as Parquet with ``schema``, written atomically to ``uri``."""
    table = pa.Table.from_pylist(
        [storage.redact({c: r.get(c) for c in schema.names}) for r in rows], schema=schema
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue())


def _publish(
    summary: BatchSummary, results: list[dict[str, Any]], key: str, report: ValidationReport
) -> None:
    table = [
        {c: (str(r[c])[:200] if c == "error" and r[c] else r[c]) for c in _TABLE_COLUMNS}
        for r in results[:_TABLE_ROWS]
    ]
    more = f" (first {_TABLE_ROWS} of {len(results)})" if len(results) > _TABLE_ROWS else ""
    create_table_artifact(table=table, key=key, description=f"render-batch {summary.batch_id}: results{more}")
    lines = [
        f"# render-batch `{summary.batch_id}`",
        "",
        f"- rows: **{summary.total}**, succeeded **{summary.succeeded}**, failed **{summary.failed}**"
        f" (invalid in the manifest: {summary.invalid}), reused from an earlier run: {summary.reused}",
        f"- results: `{summary.results_uri}`",
        f"- wall time: {summary.seconds:.1f} s",
    ]
    if summary.synthetic_weights:
        lines.append("- **WARNING: rendered with SYNTHETIC weights: these videos are not real results.**")
    if summary.failures:
        lines += ["", "| id | stage | error |", "|---|---|---|"]
        lines += [f"| {i} | {s} | {e[:200].replace('|', '/')} |" for i, s, e in summary.failures]
    if report.problems:
        lines += ["", "Manifest problems:", "", "```", report.format_problems(limit=100), "```"]
    create_markdown_artifact(markdown=str(storage.redact("\n".join(lines))), key=f"{key}-summary")


@flow(name="render-batch", persist_result=False, validate_parameters=True)
def render_batch(
    manifest: str,
    output: str,
    cache: str | None = None,
    batch_id: str | None = None,
    strict: bool = False,
    force: bool = False,
    runner: RunnerName = "threads",
    dask_address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    check_files: bool = True,
) -> BatchSummary:
    """Render one talking-head video per manifest row.

    Args:
        manifest: Parquet manifest (local path, ``file://``, ``s3://``, any fsspec URL).
        output: output prefix; the batch goes to ``<output>/<batch_id>/``.
        cache: prefix of the shared stage cache (default ``<output>/cache``).
        batch_id: default: manifest file stem + 12 hex digits of its content hash (a rerun resumes).
        strict: fail the whole batch, before any model work, when the manifest has any problem.
        force: recompute every stage even when its artefact exists.
        runner: ``threads`` (one process) or ``dask`` (LocalCluster of ``workers`` processes, or
            ``dask_address``).
        dask_address: scheduler of an existing Dask cluster (``tcp://host:8786``).
        workers: rows in flight (threads) or worker processes (new LocalCluster).
        device: ``auto`` (CUDA when the worker has it), ``cpu``, ``cuda``, ``cuda:<i>``.
        dtype: compute dtype of the networks.
        check_files: check that every input file exists while validating.

    Returns:
        The :class:`BatchSummary`; the flow completes even when rows failed.
    """
    start = time.perf_counter()
    log = get_run_logger()
    report = load_manifest(manifest, check_files=check_files)
    if strict and report.problems:
        raise StrictModeError(
            f"strict mode: the manifest has {len(report.problems)} problem(s); nothing was run:\n"
            + report.format_problems(limit=200)
        )
    batch = batch_id or batch_id_for(manifest, report.manifest_sha256)
    paths = BatchPaths.create(output, batch, cache)
    ctx = StageContext(paths=paths, device=device, dtype=dtype, force=force, progress=sys.stderr.isatty())
    key = "render-batch-" + (re.sub(r"[^a-z0-9-]+", "-", batch.lower()).strip("-") or "batch")
    log.info("batch %s: %d rows -> %s", batch, report.num_rows, storage.redact(paths.root))

    results: dict[int, dict[str, Any]] = {}
    for bad in report.invalid:
        results[bad.row] = _empty_result(bad.row, bad.id)
        results[bad.row].update(status="failed", failed_stage="validate", error=storage.redact(bad.error))
    progress = _Progress(report.num_rows, batch, key)
    if report.invalid:
        progress.advance(len(report.invalid))
    try:
        with make_task_runner(runner, workers=workers, dask_address=dask_address) as task_runner:
            chains = {
                report.row_numbers[row.id]: (row, _submit_row(task_runner, row, ctx)) for row in report.rows
            }
            last = {futures["qc"]: number for number, (_, futures) in chains.items()}
            for future in as_completed(list(last)):
                number = last[future]
                result = results[number] = _collect_row(number, *chains[number])
                if result["status"] == "failed":
                    log.warning(
                        "row %s failed at %s: %s", result["id"], result["failed_stage"], result["error"]
                    )
                progress.advance()
    finally:
        progress.close()

    ordered = [results[n] for n in sorted(results)]
    _write_parquet(paths.results, ordered, RESULT_SCHEMA)
    qc_schema = pa.schema([RESULT_SCHEMA.field(c) for c in _QC_COLUMNS])
    _write_parquet(paths.qc, [r for r in ordered if r["qc_status"] is not None], qc_schema)
    failed = [r for r in ordered if r["status"] == "failed"]
    summary = BatchSummary(
        batch_id=batch,
        batch_uri=str(storage.redact(paths.root)),
        results_uri=str(storage.redact(paths.results)),
        total=len(ordered),
        succeeded=len(ordered) - len(failed),
        failed=len(failed),
        invalid=len(report.invalid),
        reused=sum(1 for r in ordered if r["render_reused"]),
        synthetic_weights=any(r["synthetic_weights"] for r in ordered),
        seconds=time.perf_counter() - start,
        failures=tuple(
            (str(r["id"]), str(r["failed_stage"]), str(r["error"])) for r in failed[:_FAILURES_KEPT]
        ),
    )
    _publish(summary, ordered, key, report)
    log.info(
        "batch %s: %d succeeded, %d failed, %d reused in %.1f s; results: %s",
        batch,
        summary.succeeded,
        summary.failed,
        summary.reused,
        summary.seconds,
        summary.results_uri,
    )
    if summary.synthetic_weights:
        log.warning("rendered with SYNTHETIC weights: these videos are not real results")
    return summary
