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

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import TaskRunner
from tqdm import tqdm

from flows.publish import (
    artifact_key,
    batch_record,
    publish_artifacts,
    write_parquet,
    write_qc_table,
    write_report_and_index,
)
from flows.runners import RunnerName, make_task_runner
from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.paths import BatchPaths, batch_id_for
from tasks import coefficients_task, extract_face_task, load_manifest, qc_task, render_task
from tasks.common import models_module
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
        ("qc_verdict", pa.string()),  # pass | warn | fail (fail: the row's status is failed, stage qc)
        ("qc_problems", pa.string()),
        ("qc_protocol", pa.string()),
        ("synthetic_weights", pa.bool_()),
        ("weights", pa.string()),  # the label of exactly the files loaded: official:<sha12>+<sha12>
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
_TABLE_METRICS = (
    "identity_similarity",
    "face_presence",
    "sync_correlation",
    "sync_offset_frames",
    "sharpness_ratio",
    "longest_frozen_run",
    "av_drift_frames",
)
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
    device: str = "auto",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    check_files: bool = True,
    qc_thresholds: dict[str, dict[str, float]] | None = None,
    report: bool = True,
    weights: Literal["official", "synthetic", "auto"] | None = None,
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
        device: ``auto`` (CUDA when the worker has it), ``cpu``, ``cuda``, ``cuda:<i>``.
        dtype: compute dtype of the networks.
        check_files: check that every input file exists while validating.
        qc_thresholds: overrides of the QC thresholds for this batch, e.g.
            ``{"identity_similarity": {"fail": 0.5}, "sync_offset_frames": {"warn": 2}}`` (defaults and
            meanings: docs/qc.md).
        report: write ``report.html`` and update ``<output>/index.html``.
        weights: the weights policy: ``official`` refuses to start, before any row work, when an official
            file the batch needs is missing (the error names each file and the command that fetches it);
            ``synthetic`` renders with synthetic weights (noise, for tests); ``auto`` uses the official set
            of a size when it is complete, else synthetic files, loudly. Default:
            ``$SADTALKER_WEIGHTS_POLICY``, else ``auto``.

    Returns:
        The :class:`BatchSummary`; the flow completes even when rows failed.
    """
    from sadtalker.qc import QC_PROTOCOL, parse_threshold_overrides, resolve_thresholds, thresholds_to_dict

    start = time.perf_counter()
    log = get_run_logger()
    # A typo in a metric's name or a warn limit laxer than its fail limit fails here, before any row work.
    overrides = parse_threshold_overrides(qc_thresholds or {})
    thresholds = thresholds_to_dict(resolve_thresholds(overrides))
    checked = load_manifest(manifest, check_files=check_files)
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
    )
    for warning in weight_report.warnings:
        log.warning("weights: %s", warning)
    batch = batch_id or batch_id_for(manifest, checked.manifest_sha256)
    paths = BatchPaths.create(output, batch, cache)
    ctx = StageContext(
        paths=paths,
        device=device,
        dtype=dtype,
        force=force,
        progress=sys.stderr.isatty(),
        qc_thresholds=overrides or None,
        weights=policy,
    )
    key = artifact_key(manifest, _deployment_name())
    log.info("batch %s: %d rows -> %s", batch, checked.num_rows, storage.redact(paths.root))

    results: dict[int, dict[str, Any]] = {}
    for bad in checked.invalid:
        results[bad.row] = _empty_result(bad.row, bad.id)
        results[bad.row].update(status="failed", failed_stage="validate", error=storage.redact(bad.error))
    progress = _Progress(checked.num_rows, batch, key)
    if checked.invalid:
        progress.advance(len(checked.invalid))
    try:
        with make_task_runner(runner, workers=workers, dask_address=dask_address) as task_runner:
            chains = {
                checked.row_numbers[row.id]: (row, _submit_row(task_runner, row, ctx)) for row in checked.rows
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
    write_parquet(paths.results, ordered, RESULT_SCHEMA)
    write_qc_table(paths.qc, ordered, _QC_COLUMNS, RESULT_SCHEMA, thresholds)
    failed = [r for r in ordered if r["status"] == "failed"]
    seconds = time.perf_counter() - start
    storage.write_json(
        paths.batch_record,
        batch_record(
            paths, manifest, ordered, thresholds, overrides, QC_PROTOCOL, seconds, weight_report.to_dict()
        ),
    )
    report_uri = index_uri = None
    if report:
        report_uri, index_uri = write_report_and_index(paths)
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
    return summary
