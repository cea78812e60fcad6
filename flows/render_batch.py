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
from typing import Any, Literal

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
    write_parquet,
    write_qc_table,
    write_report_and_index,
)
from flows.runners import RunnerName, default_window, make_task_runner
from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.paths import BatchPaths, batch_id_for
from sadtalker.timeouts import StageTimeouts
from tasks import coefficients_task, extract_face_task, load_manifest, qc_task, render_task
from tasks.common import models_module
from tasks.records import StageContext

__all__ = [
    "RESULT_SCHEMA",
    "STAGES",
    "BatchSummary",
    "ResultsNotSavedError",
    "StrictModeError",
    "render_batch",
]

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
        ("qc_verdict", pa.string()),  # pass | warn | fail (fail: the row's status is failed, stage qc)
        ("qc_problems", pa.string()),
        ("qc_protocol", pa.string()),
        ("synthetic_weights", pa.bool_()),
        ("weights", pa.string()),  # the label of exactly the files loaded: official:<sha12>+<sha12>
        ("landmark_backend", pa.string()),  # face-alignment | dlib: the landmarker that found the face
        ("device", pa.string()),
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
_QC_COLUMNS = (
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
_FAILURES_KEPT = 50


class StrictModeError(ValueError):
    """``strict=True`` and the manifest has problems: the batch fails before any model work."""


class ResultsNotSavedError(RuntimeError):
    """The batch ran, but some of its outputs could not be written (``results.parquet`` first; storage
    down): the message says what ran, what was saved (the results journal, where) and what was not; the
    CLI exits 3. ``summary``: the :class:`BatchSummary`; ``errors``: ``{file: error}``; ``journal``: the
    journal's URI; ``journaled``: rows of this run in the journal; ``unsaved``: rows of this run in none."""

    def __init__(
        self,
        message: str,
        summary: BatchSummary | None = None,
        errors: Mapping[str, str] | None = None,
        journal: str | None = None,
        journaled: int = 0,
        unsaved: int = 0,
    ):
        super().__init__(message)
        self.summary, self.errors, self.journal = summary, dict(errors or {}), journal
        self.journaled, self.unsaved = journaled, unsaved

    def __reduce__(self) -> Any:  # picklable with its fields (Prefect may copy a flow's exception)
        args = (str(self), self.summary, self.errors, self.journal, self.journaled, self.unsaved)
        return (type(self), args)


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
    qc = runner.submit(qc_task, {"row": row, "face": face, "render": render, "coeffs": coeffs, "ctx": ctx})
    return {"face": face, "coeffs": coeffs, "render": render, "qc": qc}


def _collect_row(number: int, row: ManifestRow, futures: Mapping[str, PrefectFuture[Any]]) -> dict[str, Any]:
    """The row's results: every completed stage's record, then the first failure (if any). A QC verdict
    ``fail`` fails the row at stage ``qc`` (its video stays where it is, for the reviewer)."""
    result = _empty_result(number, row.id, row.image, row.audio)
    for stage in STAGES:
        future = futures[stage]
        future.wait()
        state = future.state
        if not state.is_completed():
            result.update(status="failed", failed_stage=stage, error=_state_error(state))
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
) -> Iterator[tuple[int, ManifestRow, dict[str, Any]] | None]:
    """Run ``rows`` (manifest order) with at most ``window`` of them submitted at once.

    Each row goes in as its whole chain of four tasks (:func:`_submit_row`), so a row's QC runs while the
    next rows' face, coefficients and render run. Yields ``(number, row, result)`` as each row's chain ends,
    after submitting the next row (the window stays full), and ``None`` when ``idle()`` seconds (None: a
    minute) pass without one: the caller's chance to write its journal. Nothing here grows with the
    manifest: at most ``window`` rows' futures are held.
    """
    finished: queue.SimpleQueue[PrefectFuture[Any]] = queue.SimpleQueue()
    active: dict[PrefectFuture[Any], tuple[int, ManifestRow, dict[str, PrefectFuture[Any]]]] = {}

    def fill() -> None:
        while len(active) < window and (row := next(rows, None)) is not None:
            futures = _submit_row(task_runner, row, ctx)
            active[futures["qc"]] = (row_numbers[row.id], row, futures)
            futures["qc"].add_done_callback(finished.put)  # after `active` holds it: it may run at once

    fill()
    while active:
        timeout = idle()
        try:
            future = finished.get(timeout=60.0 if timeout is None else max(timeout, 0.01))
        except queue.Empty:
            yield None
            continue
        number, row, futures = active.pop(future)
        result = _collect_row(number, row, futures)
        _forget(task_runner, futures)
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
    paths: BatchPaths, rows: Iterator[ManifestRow], row_numbers: Mapping[str, int], settings: str, log: Any
) -> dict[int, dict[str, Any]]:
    """The rows an earlier run of this batch finished and journaled but did not put in a
    ``results.parquet`` (it was killed, or its storage failed): each row whose newest journaled record
    succeeded with the same fingerprint (same row, same batch settings and weight sets) is taken as it is,
    not run again; its ``*_reused`` flags say so. Failed rows run again."""
    try:
        table = read_journal(paths, RESULT_SCHEMA)
    except Exception as exc:  # listing failed: run every row (their stored stages are still reused)
        log.warning("results journal %s unreadable, every row runs: %s", storage.redact(paths.journal), exc)
        return {}
    if table is None:
        return {}
    by_id = {row.id: row for row in rows}
    taken: dict[int, dict[str, Any]] = {}
    for record in journal_records(table.filter(pc.equal(table["status"], "succeeded"))):
        row = by_id.get(record["id"])
        if row is None or record.pop(FINGERPRINT, None) != row_fingerprint(settings, row):
            continue
        number = row_numbers[row.id]
        record.update(row=number, face_reused=True, coeffs_reused=True, render_reused=True, qc_reused=True)
        taken[number] = record
    log.info(
        "results journal %s: %d row(s) that an earlier run of this batch finished are taken as they are "
        "(of %d journaled; failed or changed rows run again)",
        storage.redact(paths.journal),
        len(taken),
        table.num_rows,
    )
    return taken


def _attempt(what: str, write: Callable[[], Any], errors: dict[str, str], log: Any) -> Any:
    """``write()``; on failure, its error goes into ``errors[what]`` (and the log) instead of up."""
    try:
        return write()
    except Exception as exc:
        errors[what] = str(storage.redact(f"{type(exc).__name__}: {exc}"))
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
        f"{storage.redact(journal.uri)} (`sadtalker-batch results {summary.batch_uri}` shows them); the "
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
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    check_files: bool = True,
    qc_thresholds: dict[str, dict[str, float]] | None = None,
    report: bool = True,
    weights: Literal["official", "synthetic", "auto"] | None = None,
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
        dtype: compute dtype of the networks.
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
    from sadtalker.qc import QC_PROTOCOL, parse_threshold_overrides, resolve_thresholds, thresholds_to_dict

    start = time.perf_counter()
    log = get_run_logger()
    # A typo in a metric's name or a warn limit laxer than its fail limit fails here, before any row work.
    overrides = parse_threshold_overrides(qc_thresholds or {})
    thresholds = thresholds_to_dict(resolve_thresholds(overrides))
    limits = StageTimeouts.from_mapping(timeouts)  # likewise an unknown timeout name or a bad value
    checked = load_manifest(manifest, check_files=check_files, allowed_prefixes=allowed_prefixes)
    if strict and checked.problems:
        raise StrictModeError(
            f"strict mode: the manifest has {len(checked.problems)} problem(s); nothing was run:\n"
            + checked.format_problems(limit=200)
        )
    # Every set the batch needs is resolved and verified here, before any row work or output: under
    # `official` a missing file stops the batch now, not one row at a time on the workers.
    policy = models_module().resolve_policy(weights)
    weight_report = models_module().check_weights(
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
        force=force,
        progress=sys.stderr.isatty(),
        qc_thresholds=overrides or None,
        weights=policy,
        timeouts=limits,
    )
    key = artifact_key(manifest, _deployment_name())
    log.info("batch %s: %d rows -> %s", batch, checked.num_rows, storage.redact(paths.root))

    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    results: dict[int, dict[str, Any]] = {}
    for bad in checked.invalid:
        results[bad.row] = _empty_result(bad.row, bad.id)
        results[bad.row].update(status="failed", failed_stage="validate", error=storage.redact(bad.error))
    # Finished rows go to the results journal as they finish (results.partial/, flows.journal), so that a
    # crash of this process or of the storage leaves their results; a rerun takes what it holds.
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
    taken = {}
    if not force:  # --force recomputes every row: nothing is taken from the journal either
        taken = _resume_from_journal(paths, iter(checked.rows), checked.row_numbers, settings, log)
    results.update(taken)
    progress = _Progress(checked.num_rows, batch, key)
    if checked.invalid or taken:
        progress.advance(len(checked.invalid) + len(taken))
    todo = (row for row in checked.rows if checked.row_numbers[row.id] not in taken)
    try:
        with make_task_runner(runner, workers=workers, dask_address=dask_address) as task_runner:
            size = window or default_window(runner, workers, task_runner)
            log.info(
                "batch %s: %d rows to run, at most %d submitted at once; results journal: %s",
                batch,
                len(checked.rows) - len(taken),
                size,
                storage.redact(journal.uri),
            )
            for done in _run_window(task_runner, todo, checked.row_numbers, ctx, size, journal.due_in):
                if done is not None:
                    number, row, result = done
                    results[number] = result
                    journal.add(result, row_fingerprint(settings, row))
                    if result["status"] == "failed":
                        log.warning(
                            "row %s failed at %s: %s", result["id"], result["failed_stage"], result["error"]
                        )
                    progress.advance()
                journal.flush_if_due()
    finally:
        progress.close()
        journal.flush()  # also when the loop raised: what finished stays findable

    # The batch's outputs. A write that fails (storage down) does not make the batch "not run": its error is
    # kept, the rest is still tried where it can be, and ResultsNotSavedError at the end says what is saved.
    ordered = [results[n] for n in sorted(results)]
    errors: dict[str, str] = {}
    skipped: list[str] = []
    _attempt("results.parquet", lambda: write_parquet(paths.results, ordered, RESULT_SCHEMA), errors, log)
    failed = [r for r in ordered if r["status"] == "failed"]
    report_uri = index_uri = None
    if errors:  # the storage fails (the rest would too), or the table does not fit: report what is saved
        skipped = ["qc.parquet", "batch.json"] + (["report.html", "index.html"] if report else [])
    else:
        _attempt(
            "qc.parquet",
            lambda: write_qc_table(paths.qc, ordered, _QC_COLUMNS, RESULT_SCHEMA, thresholds),
            errors,
            log,
        )
        seconds = time.perf_counter() - start
        record = batch_record(
            paths, manifest, ordered, thresholds, overrides, QC_PROTOCOL, seconds, weight_report.to_dict()
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
                log.warning("results journal %s not removed: %s", storage.redact(journal.uri), exc)
    summary = BatchSummary(
        batch_id=batch,
        batch_uri=str(storage.redact(paths.root)),
        results_uri=str(storage.redact(paths.results)),
        total=len(ordered),
        succeeded=len(ordered) - len(failed),
        failed=len(failed),
        invalid=len(checked.invalid),
        reused=sum(1 for r in ordered if r["render_reused"]),
        synthetic_weights=any(r["synthetic_weights"] for r in ordered),
        seconds=time.perf_counter() - start,
        failures=tuple(
            (str(r["id"]), str(r["failed_stage"]), str(r["error"])) for r in failed[:_FAILURES_KEPT]
        ),
        qc_pass=sum(1 for r in ordered if r["qc_verdict"] == "pass"),
        qc_warn=sum(1 for r in ordered if r["qc_verdict"] == "warn"),
        qc_fail=sum(1 for r in ordered if r["qc_verdict"] == "fail"),
        report_uri=None if report_uri is None else str(storage.redact(report_uri)),
        index_uri=None if index_uri is None else str(storage.redact(index_uri)),
        weights_policy=policy,
        weights=tuple(sorted({str(r["weights"]) for r in ordered if r["weights"]})),
        resumed=len(taken),
    )
    publish_artifacts(
        key,
        summary,
        ordered,
        checked.format_problems(limit=100) if checked.problems else "",
        _TABLE_COLUMNS,
        _TABLE_METRICS,
        max_rows=_TABLE_ROWS,
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
            journal=str(storage.redact(journal.uri)),
            journaled=journal.saved,
            unsaved=journal.pending,
        )
    return summary
