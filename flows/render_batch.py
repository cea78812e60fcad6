"""The ``render-batch`` flow: a Parquet manifest of photo-speech pairs in, one talking-head video per row out.

1. ``load_manifest`` validates every row first (``strict``: any problem fails the batch before any model
   work; otherwise invalid rows get status ``failed`` and the valid ones go on).
2. Each valid row is submitted as a chain of tasks: face -> coefficients -> render -> QC. Tasks exchange
   small records (URIs, hashes, timings); every artefact is content-addressed or carries its key, so a
   rerun of an interrupted batch does only what is missing (``force`` recomputes everything).
3. A failing row never fails the batch: its first failing stage and error go into ``results.parquet``;
   the flow ends ``Completed`` and its summary (and the CLI's exit code) say how many rows failed.
4. Outputs (layout: ``sadtalker.paths``): ``<output>/<batch_id>/results.parquet``, ``qc.parquet`` and
   ``items/<id>/...``, ``batch.json``, ``report.html`` and the prefix's ``index.html`` (flows.publish);
   artifacts: a progress artifact updated in place, a table with the QC figures, a markdown summary
   naming the worst items and a link to the report.
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner
from tqdm import tqdm

from flows.journal import (
    FINGERPRINT,
    ResultsJournal,
    describe_unsaved,
    journal_records,
    read_journal,
    remove_journal,
    row_fingerprint,
    settings_digest,
)
from flows.publish import (
    HEADLINE_METRICS,
    artifact_key,
    batch_record,
    publish_artifacts,
    write_qc_table,
    write_report_and_index,
)
from flows.results import (
    QC_COLUMNS,
    RESULT_SCHEMA,
    BatchTally,
    empty_result,
    final_table,
    records,
    worst_records,
)
from flows.runners import RunnerName, default_window, make_task_runner
from flows.stopping import BatchStopper
from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.options import DType, WeightsPolicy
from sadtalker.paths import BatchPaths, batch_id_for
from sadtalker.redaction import redact
from sadtalker.timeouts import StageTimeouts, io_scope
from tasks.coeffs import coefficients_task
from tasks.face import extract_face_task
from tasks.load import load_manifest
from tasks.qc import qc_task
from tasks.records import StageContext
from tasks.render import render_task
from tasks.retry import is_transient

__all__ = [
    "RESULT_SCHEMA",
    "STAGES",
    "BatchStopped",
    "BatchSummary",
    "ResultsNotSavedError",
    "StrictModeError",
    "render_batch",
]

#: The stages of a row, in order (``failed_stage`` in the results; ``validate`` for invalid rows).
STAGES: tuple[str, ...] = ("face", "coeffs", "render", "qc")

#: QC figures shown in the Prefect table artifact (rounded for reading), when the row has them.
_TABLE_METRICS = HEADLINE_METRICS
_TABLE_COLUMNS = (
    "row",
    "id",
    "status",
    "failed_stage",
    "qc_verdict",
    "num_frames",
    "duration_s",
    "total_s",
    "error",
)
_TABLE_ROWS = 1000
_WORST_ROWS = 10
_FAILURES_KEPT = 50
_WAIT_S = 0.5  # longest wait of the row loop between checks (signals, the journal)
#: The batch stops submitting rows when this many rows in a row failed with a transient fault (storage or
#: network down, a full disk) after their retries: the rest would fail the same way.
STORAGE_BREAKER_ROWS = 3


class StrictModeError(ValueError):
    """``strict=True`` and the manifest has problems: the batch fails before any model work."""


class BatchIncomplete(RuntimeError):
    """The batch ended without all of its outputs. The message says what ran, what was saved (the results
    journal, where) and what was not. ``summary``: the :class:`BatchSummary`; ``journal``: the journal's
    URI; ``journaled``: rows of this run in the journal; ``unsaved``: rows of this run in none."""

    def __init__(
        self,
        message: str,
        summary: BatchSummary | None = None,
        journal: str | None = None,
        journaled: int = 0,
        unsaved: int = 0,
    ):
        super().__init__(message)
        self.summary, self.journal, self.journaled, self.unsaved = summary, journal, journaled, unsaved

    def __reduce__(self) -> Any:  # picklable with its fields (Prefect may copy a flow's exception)
        return (type(self), (str(self),), vars(self))


class ResultsNotSavedError(BatchIncomplete):
    """Every row ran, but some of the batch's outputs could not be written (``results.parquet`` first;
    storage down). ``errors``: ``{file: error}``. The CLI exits 3."""

    def __init__(self, message: str, errors: Mapping[str, str] | None = None, **fields: Any):
        super().__init__(message, **fields)
        self.errors = dict(errors or {})


class BatchStopped(BatchIncomplete):
    """The batch stopped before every row ran (SIGTERM / SIGINT, or the storage breaker; ``flows.stopping``):
    no new row was submitted, the rows in flight finished and were journaled, and no ``results.parquet``
    was written; a rerun of the same manifest finishes the batch. ``signum``: the signal (None for the
    breaker); ``not_run``: rows never started. The CLI exits 128 + signum after a signal, 4 after the
    breaker."""

    def __init__(self, message: str, signum: int | None = None, not_run: int = 0, **fields: Any):
        super().__init__(message, **fields)
        self.signum, self.not_run = signum, not_run


@dataclass(frozen=True)
class BatchSummary:
    """What a batch did. ``failed`` counts every failed row, QC failures (``qc_fail``) and invalid manifest
    rows included; ``failures``: ``(id, stage, error)`` of the first failed rows."""

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
    qc_pass: int = 0
    qc_warn: int = 0
    qc_fail: int = 0
    report_uri: str | None = None
    index_uri: str | None = None
    weights_policy: str | None = None
    weights: tuple[str, ...] = ()
    resumed: int = 0  # rows taken as they were from the results journal of an earlier, unfinished run

    @property
    def ok(self) -> bool:
        """True when every row succeeded (rendered and passed QC, with or without warnings)."""
        return self.failed == 0


def _state_error(state: Any) -> tuple[str, bool]:
    """``Type: message`` of a failed task run (or the state's message when it did not raise), and whether
    it failed with a transient fault (``tasks.retry.is_transient``: storage or network, after retries)."""
    if state.is_failed() or state.is_crashed():
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, BaseException):
            return str(redact(f"{type(exc).__name__}: {exc}")), is_transient(exc)
    return str(redact(state.message or state.name or "did not complete")), False


def _submit_row(runner: TaskRunner, row: ManifestRow, ctx: StageContext) -> dict[str, PrefectFuture[Any]]:
    """Submit the row's four tasks; each waits for its upstream futures (passed as parameters)."""
    face = runner.submit(extract_face_task, {"row": row, "ctx": ctx})
    coeffs = runner.submit(coefficients_task, {"row": row, "face": face, "ctx": ctx})
    render = runner.submit(render_task, {"row": row, "face": face, "coeffs": coeffs, "ctx": ctx})
    qc = runner.submit(qc_task, {"row": row, "face": face, "render": render, "coeffs": coeffs, "ctx": ctx})
    return {"face": face, "coeffs": coeffs, "render": render, "qc": qc}


def _collect_row(number: int, row: ManifestRow, futures: Mapping[str, PrefectFuture[Any]]) -> dict[str, Any]:
    """The row's results: every completed stage's record, then the first failure (if any). A QC verdict
    ``fail`` fails the row at stage ``qc`` (its video stays where it is, for the reviewer). ``_transient``
    (not a column): the row failed with a transient fault (for the storage breaker)."""
    result = empty_result(number, row.id, row.image, row.audio)
    for stage in STAGES:
        future = futures[stage]
        future.wait()
        state = future.state
        if not state.is_completed():
            error, transient = _state_error(state)
            result.update(status="failed", failed_stage=stage, error=error, _transient=transient)
            break
        record = future.result()
        result.update(record.result_fields())
        if stage == "qc":
            result["_qc_metrics"] = record.metrics
    else:
        result["status"] = "succeeded"
        if result["qc_verdict"] == "fail":
            result.update(
                status="failed", failed_stage="qc", error=f"QC fail: {result['qc_problems'] or 'see qc.json'}"
            )
    result["total_s"] = sum(result[k] or 0.0 for k in ("face_s", "coeffs_s", "render_s", "qc_s"))
    return result


def _forget(task_runner: TaskRunner, futures: Mapping[str, PrefectFuture[Any]]) -> None:
    """Drop what Prefect keeps in this process of a collected row's task runs, which would otherwise grow
    with the manifest until the flow ends:

    - the flow run context's ``run_results`` (result id -> a copy of the task run's final state, kept to link
      a result passed to a later task back to its run): about a dozen entries per task run, ~16 KB per row;
      the row's results are never passed to another task, so their entries have no use left;
    - its ``task_run_assets`` (task run id -> the assets it passes downstream: an empty set here);
    - the ThreadPoolTaskRunner's cancel event per task run (private to it: without it, nothing to drop).
    """
    from prefect.context import FlowRunContext

    ids = {getattr(future, "task_run_id", None) for future in futures.values()}
    context = FlowRunContext.get()
    run_results = getattr(context, "run_results", None)
    if isinstance(run_results, dict):
        # Task threads add entries meanwhile: iterate over a copy (dict.copy is atomic), pop one by one.
        for key, entry in run_results.copy().items():
            state = entry[0] if isinstance(entry, tuple) and entry else None
            if getattr(getattr(state, "state_details", None), "task_run_id", None) in ids:
                run_results.pop(key, None)
    for per_run in (getattr(context, "task_run_assets", None), getattr(task_runner, "_cancel_events", None)):
        if isinstance(per_run, dict):
            for task_run_id in ids:
                per_run.pop(task_run_id, None)


def _run_window(
    task_runner: TaskRunner,
    rows: Iterator[ManifestRow],
    row_numbers: Mapping[str, int],
    ctx: StageContext,
    window: int,
    idle: Callable[[], float | None],
    stopper: BatchStopper | None = None,
) -> Iterator[tuple[int, ManifestRow, dict[str, Any]] | None]:
    """Run ``rows`` (manifest order) with at most ``window`` of them submitted at once.

    Each row goes in as its whole chain of four tasks (:func:`_submit_row`), so a row's QC runs while the
    next rows' face, coefficients and render run. Yields ``(number, row, result)`` as each row's chain ends,
    after submitting the next row (the window stays full), and ``None`` when ``idle()`` seconds (at most
    half a second) pass without one, or when ``stopper`` is stopped: the caller's chance to write its journal.
    Once ``stopper`` is stopped no row is submitted; the rows in flight still end and are yielded. Nothing
    here grows with the manifest: at most ``window`` rows' futures are held.
    """
    finished: queue.SimpleQueue[PrefectFuture[Any] | None] = queue.SimpleQueue()
    active: dict[PrefectFuture[Any], tuple[int, ManifestRow, dict[str, PrefectFuture[Any]]]] = {}
    if stopper is not None:
        stopper.on_wake(lambda: finished.put(None))  # SimpleQueue.put is reentrant: safe in a signal handler

    def fill() -> None:
        while (
            len(active) < window
            and not (stopper is not None and stopper.stopped)
            and (row := next(rows, None)) is not None
        ):
            futures = _submit_row(task_runner, row, ctx)
            active[futures["qc"]] = (row_numbers[row.id], row, futures)
            futures["qc"].add_done_callback(finished.put)  # after `active` holds it: it may run at once

    fill()
    while active:
        timeout = idle()
        # Short waits: a signal that lands on another thread runs its Python handler only when this (the
        # main) thread next wakes up, so a long wait here would delay a stop by as much.
        try:
            future = finished.get(timeout=_WAIT_S if timeout is None else min(max(timeout, 0.01), _WAIT_S))
        except queue.Empty:
            future = None
        if future is None:  # nothing ended: time to write the journal, or a stop was asked
            yield None
            continue
        number, row, futures = active.pop(future)
        result = _collect_row(number, row, futures)
        _forget(task_runner, futures)
        if stopper is not None:  # before refilling: a row that opens the breaker lets no other row in
            stopper.row_ended(bool(result.get("_transient")), result["error"])
        fill()
        yield number, row, result


#: Flow parameters that do not change a row's result, so not in the journal's fingerprint: where things go
#: and how the work is spread. Every other parameter (also ones added later) is in it.
_NOT_IN_FINGERPRINT = frozenset(
    {
        "manifest",
        "output",
        "cache",
        "batch_id",
        "strict",
        "force",
        "runner",
        "dask_address",
        "workers",
        "window",
        "check_files",
        "report",
    }
)


def _batch_settings(resolved: Mapping[str, Any]) -> str:
    """The batch-wide part of every row's journal fingerprint (:func:`flows.journal.row_fingerprint`): the
    flow run's parameters but those of :data:`_NOT_IN_FINGERPRINT`, overridden by ``resolved`` (the
    resolved weights policy and sets, QC thresholds and protocol, device, dtype)."""
    try:
        from prefect.runtime import flow_run

        parameters = dict(flow_run.parameters or {})
    except Exception:  # no flow run context (the body called directly): the resolved settings alone
        parameters = {}
    settings = {k: v for k, v in parameters.items() if k not in _NOT_IN_FINGERPRINT}
    settings.update(resolved)
    return settings_digest(settings)


def _resume_from_journal(
    paths: BatchPaths, rows: Iterator[ManifestRow], settings: str, tally: BatchTally, log: Any
) -> set[str]:
    """The ids of the rows an earlier run of this batch finished and journaled but did not put in a
    ``results.parquet`` (it was killed, stopped, or its storage failed): each row whose newest journaled
    record succeeded with the same fingerprint (same row, same batch settings and weight sets) is taken as
    it is, not run again (the final table marks it reused). Failed rows run again. ``tally`` counts the
    taken rows; their records stay in the journal."""
    try:
        table = read_journal(paths, RESULT_SCHEMA)
    except Exception as exc:  # listing failed: run every row (their stored stages are still reused)
        log.warning("results journal %s unreadable, every row runs: %s", redact(paths.journal), exc)
        return set()
    if table is None:
        return set()
    by_id = {row.id: row for row in rows}
    taken: set[str] = set()
    for record in journal_records(table.filter(pc.equal(table["status"], "succeeded"))):
        row = by_id.get(record["id"])
        if row is None or record.pop(FINGERPRINT, None) != row_fingerprint(settings, row):
            continue
        taken.add(row.id)
        tally.add({**record, "render_reused": True}, resumed=True)
    log.info(
        "results journal %s: %d row(s) that an earlier run of this batch finished are taken as they are "
        "(of %d journaled; failed or changed rows run again)",
        redact(paths.journal),
        len(taken),
        table.num_rows,
    )
    return taken


def _record_rows(
    rows: Iterator[tuple[int, ManifestRow, dict[str, Any]] | None],
    journal: ResultsJournal,
    tally: BatchTally,
    settings: str,
    stopper: BatchStopper,
    progress: _Progress,
    log: Any,
) -> int:
    """Journal and count each row as it ends (``rows``: :func:`_run_window`); returns how many ended. Once
    the batch stops, each row that ends is written to the journal at once."""
    ran, announced = 0, False
    for done in rows:
        if done is not None:
            _, row, result = done
            ran += 1
            tally.add(result)
            journal.add(result, row_fingerprint(settings, row))
            if result["status"] == "failed":
                log.warning("row %s failed at %s: %s", result["id"], result["failed_stage"], result["error"])
            progress.advance()
        if stopper.stopped:
            if not announced:
                announced = True
                log.warning(
                    "stopping (%s): no new row starts; the rows in flight finish (a second SIGTERM or Ctrl-C "
                    "stops at once)",
                    stopper.reason,
                )
            journal.flush()
        journal.flush_if_due()
    return ran


def _invalid_result(bad: Any) -> dict[str, Any]:
    """The result record of a row that failed validation (``manifests.validate``'s invalid row)."""
    result = empty_result(bad.row, bad.id)
    result.update(status="failed", failed_stage="validate", error=redact(bad.error))
    return result


def _write_results(paths: BatchPaths, journal: ResultsJournal, checked: Any, taken: set[str]) -> pa.Table:
    """Write ``results.parquet`` from the journal (``flows.results.final_table``); returns the table (with
    ``_qc_metrics``) for the other outputs."""
    invalid = (_invalid_result(bad) for bad in checked.invalid)
    table = final_table(paths, journal, checked.row_numbers, invalid, resumed=taken)
    storage.write_parquet(paths.results, table.drop_columns(["_qc_metrics"]))
    return table


def _summary(
    paths: BatchPaths,
    batch: str,
    tally: BatchTally,
    start: float,
    policy: str,
    report_uri: str | None = None,
    index_uri: str | None = None,
) -> BatchSummary:
    return BatchSummary(
        batch_id=batch,
        batch_uri=str(redact(paths.root)),
        results_uri=str(redact(paths.results)),
        total=tally.total,
        succeeded=tally.succeeded,
        failed=tally.failed,
        invalid=tally.invalid,
        reused=tally.reused,
        synthetic_weights=True in tally.synthetic,
        seconds=time.perf_counter() - start,
        failures=tally.failures,
        qc_pass=tally.qc["pass"],
        qc_warn=tally.qc["warn"],
        qc_fail=tally.qc["fail"],
        report_uri=None if report_uri is None else str(redact(report_uri)),
        index_uri=None if index_uri is None else str(redact(index_uri)),
        weights_policy=policy,
        weights=tuple(sorted(tally.weights)),
        resumed=tally.resumed,
    )


def _stopped_message(
    summary: BatchSummary, stopper: BatchStopper, not_run: int, journal: ResultsJournal
) -> str:
    """What ran, what was saved and what was not, when the batch stopped early."""
    earlier = f" (and {summary.resumed} taken from an earlier run's journal)" if summary.resumed else ""
    return (
        f"batch {summary.batch_id} STOPPED ({stopper.reason}) before every row ran: {summary.total} rows "
        f"ended, {summary.succeeded} succeeded, {summary.failed} failed{earlier}; {not_run} row(s) NOT RUN. "
        f"SAVED: the results of {journal.saved} row(s) of this run in the results journal "
        f"{redact(journal.uri)} (`sadtalker-batch results {summary.batch_uri}` shows them), and "
        "the videos and stage outputs of finished rows. NOT SAVED: results.parquet and the report (written "
        "when every row has run), "
        f"{describe_unsaved(journal)}. Rerun the same manifest (same batch id) to finish: rows the journal "
        "holds as succeeded are not run again."
    )


def _attempt(what: str, write: Callable[[], Any], errors: dict[str, str], log: Any) -> Any:
    """``write()``; on failure, its error goes into ``errors[what]`` (and the log) instead of up."""
    try:
        return write()
    except Exception as exc:
        errors[what] = str(redact(f"{type(exc).__name__}: {exc}"))
        log.error("batch output %s not written: %s", what, errors[what])
        return None


def _not_saved_message(
    summary: BatchSummary, errors: Mapping[str, str], skipped: list[str], journal: ResultsJournal
) -> str:
    """What ran, what was saved and what was not, when a batch's final writes failed."""
    ran = (
        f"batch {summary.batch_id} ran: {summary.total} rows, {summary.succeeded} succeeded, "
        f"{summary.failed} failed ({summary.invalid} invalid in the manifest)"
        + (f", {summary.resumed} taken from an earlier run's journal" if summary.resumed else "")
    )
    lost = "; ".join(f"{k}: {v}" for k, v in errors.items())
    text = f"{ran}; but not every batch output was written: {lost}"
    if skipped:
        text += f"; not attempted: {', '.join(skipped)}"
    if "results.parquet" not in errors:
        return text + f". results.parquet is written: {summary.results_uri}"
    earlier = f" and {summary.resumed} of earlier runs" if summary.resumed else ""
    return text + (
        f". SAVED: the results of {journal.saved} row(s) of this run{earlier} in the results journal "
        f"{redact(journal.uri)} (`sadtalker-batch results {summary.batch_uri}` shows them); the "
        "videos and stage outputs of finished rows are in storage. NOT SAVED: results.parquet, "
        f"{describe_unsaved(journal)}. Rerun the same manifest (same batch id) once the storage works: rows "
        "the journal holds as succeeded are not run again, the others are, and results.parquet is written."
    )


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


def _deployment_name() -> str | None:
    """The name of the deployment this flow run belongs to, if any (stable artifact keys)."""
    try:
        from prefect.runtime import deployment

        return deployment.name
    except Exception:  # no run context or no deployment: a local run
        return None


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
    window: int | None = None,
    device: str = "auto",
    dtype: DType = "float32",
    compile: bool = False,
    check_files: bool = True,
    qc_thresholds: dict[str, dict[str, float]] | None = None,
    report: bool = True,
    weights: WeightsPolicy | None = None,
    allowed_prefixes: list[str] | None = None,
    timeouts: dict[str, float] | None = None,
) -> BatchSummary:
    """Render one talking-head video per manifest row, check each one, and write the batch's report.

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
        window: at most this many rows submitted to the task runner at once (each as its chain of four
            tasks); the next row goes in as one ends, so memory does not grow with the manifest. Default:
            2 per worker (``flows.runners.default_window``).
        device: ``auto`` (CUDA when the worker has it), ``cpu``, ``cuda``, ``cuda:<i>``.
        dtype: the renderer's precision (float16 / bfloat16 on a GPU worker only).
        compile: render through ``torch.compile`` (a one-off compile per worker process and batch shape,
            then faster frames; CPU workers need a C++ compiler). Frames match within float rounding, so
            the render key is unchanged; each row's ``compiled`` column says which way it was rendered.
        check_files: check that every input file exists while validating.
        allowed_prefixes: folders or URLs (``s3://bucket/media/``) the manifest's rows may name files
            under (image, audio, references; ``..`` and symlinks resolved first); a row naming a file
            elsewhere is invalid. Default: the manifest's own folder tree. ``["*"]``: any path the worker
            can read (one-machine use only). Relative paths resolve against the working directory.
        qc_thresholds: overrides of the QC thresholds for this batch, e.g.
            ``{"identity_similarity": {"fail": 0.5}, "sync_offset_frames": {"warn": 2}}`` (defaults and
            meanings: docs/qc.md).
        report: write ``report.html`` and update ``<output>/index.html``.
        weights: the weights policy: ``official`` refuses to start, before any row work, when an official
            file the batch needs is missing (the error names each file and the command that fetches it);
            ``synthetic`` renders with synthetic weights (noise, for tests); ``auto`` uses the official set
            of a size when it is complete, else synthetic files, loudly. Default:
            ``$SADTALKER_WEIGHTS_POLICY``, else ``auto``.
        timeouts: overrides of the stages' time limits in seconds, e.g. ``{"render_per_frame_s": 5}``
            (names and defaults: ``sadtalker.timeouts.StageTimeouts``, docs/pipeline.md). A row past one
            fails with ``StageTimeout`` at that stage; an unknown name fails the batch before any row work.

    Returns:
        The :class:`BatchSummary`; the flow completes even when rows failed.

    Raises:
        ResultsNotSavedError: the rows ran but ``results.parquet`` (or another batch output) could not be
            written; finished rows' results are in the results journal (``results.partial/``), which a
            rerun of the batch merges.
    """
    from sadtalker.loader import check_weights, resolve_policy  # when the flow runs: see tasks/__init__.py
    from sadtalker.qc import QC_PROTOCOL, parse_threshold_overrides, resolve_thresholds, thresholds_to_dict

    start = time.perf_counter()
    log = get_run_logger()
    # A typo in a metric's name or a warn limit laxer than its fail limit fails here, before any row work.
    overrides = parse_threshold_overrides(qc_thresholds or {})
    thresholds = thresholds_to_dict(resolve_thresholds(overrides))
    limits = StageTimeouts.from_mapping(timeouts)  # likewise an unknown timeout name or a bad value
    # The flow's own storage I/O (manifest, journal, results, report) gets the batch's io_s timeouts too.
    with io_scope(limits.io_s):
        checked = load_manifest(manifest, check_files=check_files, allowed_prefixes=allowed_prefixes)
        if strict and checked.problems:
            raise StrictModeError(
                f"strict mode: the manifest has {len(checked.problems)} problem(s); nothing was run:\n"
                + checked.format_problems(limit=200)
            )
        # Every set the batch needs is resolved and verified here, before any row work or output: under
        # `official` a missing file stops the batch now, not one row at a time on the workers.
        policy = resolve_policy(weights)
        weight_report = check_weights(
            policy,
            sizes={row.size for row in checked.rows},
            preprocesses={row.preprocess for row in checked.rows},
            enhancers={row.enhancer for row in checked.rows},
        )
        for warning in weight_report.warnings:
            log.warning("weights: %s", warning)
        batch = batch_id or batch_id_for(manifest, checked.manifest_sha256)
        paths = BatchPaths.create(output, batch, cache)
        # A location that cannot be written is found now, not after every row has run into it.
        for prefix in dict.fromkeys((paths.root, paths.cache)):
            storage.check_writable(prefix)
        ctx = StageContext(
            paths=paths,
            device=device,
            dtype=dtype,
            compile=compile,
            force=force,
            progress=sys.stderr.isatty(),
            qc_thresholds=overrides or None,
            weights=policy,
            timeouts=limits,
            allowed_prefixes=tuple(checked.allowed_prefixes),  # rechecked as each input is opened
        )
        key = artifact_key(manifest, _deployment_name())
        log.info("batch %s: %d rows -> %s", batch, checked.num_rows, redact(paths.root))

        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        # No finished row's record stays here: each goes to the results journal as it ends (flows.journal),
        # so a crash of this process or of the storage leaves it, and the final tables are read back from
        # there; what stays is the tally (counts and the first failures).
        tally = BatchTally(keep=_FAILURES_KEPT)
        for bad in checked.invalid:
            tally.add(_invalid_result(bad))
        journal = ResultsJournal(paths, RESULT_SCHEMA)
        settings = _batch_settings(
            {
                "device": device,
                "dtype": dtype,
                "qc_thresholds": overrides,
                "qc_protocol": QC_PROTOCOL,
                "weights": policy,
                "weight_sets": weight_report.to_dict(),
            }
        )
        taken: set[str] = set()
        if not force:  # --force recomputes every row: nothing is taken from the journal either
            taken = _resume_from_journal(paths, iter(checked.rows), settings, tally, log)
        progress = _Progress(checked.num_rows, batch, key)
        if tally.total:
            progress.advance(tally.total)
        todo = (row for row in checked.rows if row.id not in taken)
        stopper = BatchStopper(limit=STORAGE_BREAKER_ROWS)
        try:
            with make_task_runner(runner, workers=workers, dask_address=dask_address) as task_runner:
                size = window or default_window(runner, workers, task_runner)
                log.info(
                    "batch %s: %d rows to run, at most %d submitted at once; results journal: %s",
                    batch,
                    len(checked.rows) - len(taken),
                    size,
                    redact(journal.uri),
                )
                with stopper.signals():
                    rows = _run_window(
                        task_runner, todo, checked.row_numbers, ctx, size, journal.due_in, stopper
                    )
                    ran = _record_rows(rows, journal, tally, settings, stopper, progress, log)
        finally:
            progress.close()
            journal.flush()  # also when the loop raised: what finished stays findable

        not_run = len(checked.rows) - len(taken) - ran
        if stopper.stopped and not_run:
            summary = _summary(paths, batch, tally, start, policy)
            message = _stopped_message(summary, stopper, not_run, journal)
            log.error("%s", message)
            raise BatchStopped(
                message,
                summary=summary,
                signum=stopper.signum,
                not_run=not_run,
                journal=str(redact(journal.uri)),
                journaled=journal.saved,
                unsaved=journal.pending,
            )

        # The batch's outputs, read back from the journal. A write that fails (storage down) does not make
        # the batch "not run": its error is kept, the rest is still tried where it can be, and
        # ResultsNotSavedError at the end says what is saved.
        errors: dict[str, str] = {}
        skipped: list[str] = []
        table = _attempt(
            "results.parquet",
            lambda: _write_results(paths, journal, checked, taken),
            errors,
            log,
        )
        report_uri = index_uri = None
        if errors:  # the storage fails (the rest would too), or the table does not fit: report what is saved
            skipped = ["qc.parquet", "batch.json"] + (["report.html", "index.html"] if report else [])
        else:
            _attempt(
                "qc.parquet", lambda: write_qc_table(paths.qc, table, QC_COLUMNS, thresholds), errors, log
            )
            seconds = time.perf_counter() - start
            record = batch_record(
                paths, manifest, tally, thresholds, overrides, QC_PROTOCOL, seconds, weight_report.to_dict()
            )
            _attempt("batch.json", lambda: storage.write_json(paths.batch_record, record), errors, log)
            if report:
                report_uri, index_uri = _attempt(
                    "report.html", lambda: write_report_and_index(paths), errors, log
                ) or (None, None)
            if "qc.parquet" not in errors:  # results.parquet and qc.parquet hold every journaled row now
                try:
                    remove_journal(paths)
                except Exception as exc:  # harmless: a rerun would take the same rows from it
                    log.warning("results journal %s not removed: %s", redact(journal.uri), exc)
        summary = _summary(paths, batch, tally, start, policy, report_uri, index_uri)
        publish_artifacts(
            key,
            summary,
            [] if table is None else list(records(table.slice(0, _TABLE_ROWS))),
            [] if table is None else worst_records(table, _WORST_ROWS),
            checked.format_problems(limit=100) if checked.problems else "",
            _TABLE_COLUMNS,
            _TABLE_METRICS,
        )
        log.info(
            "batch %s: %d succeeded, %d failed (QC fail %d), %d reused in %.1f s; report: %s",
            batch,
            summary.succeeded,
            summary.failed,
            summary.qc_fail,
            summary.reused,
            summary.seconds,
            summary.report_uri or summary.results_uri,
        )
        if summary.synthetic_weights:
            log.warning("rendered with SYNTHETIC weights: these videos are not real results")
        if errors:
            message = _not_saved_message(summary, errors, skipped, journal)
            log.error("%s", message)
            raise ResultsNotSavedError(
                message,
                summary=summary,
                errors=errors,
                journal=str(redact(journal.uri)),
                journaled=journal.saved,
                unsaved=journal.pending,
            )
        return summary
