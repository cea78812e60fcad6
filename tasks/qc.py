"""Stage 4: quality control of the stored video, decoded back (``sadtalker.qc``): pass, warn or fail.

The video is never deleted or overwritten here, whatever the verdict: a reviewer must be able to look at a
failed one. The record (``items/<id>/qc.json``), the two report thumbnails (``qc_source.jpg``,
``qc_strip.jpg``) and the flat metrics for ``qc.parquet`` come out of this task; the flow turns a ``fail``
verdict into a failed row (stage ``qc``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.inputs import InputFiles
from sadtalker.records import Coefficients, FaceRecord
from sadtalker.redaction import redact
from tasks.deadlines import timed_stage
from tasks.devices import resolve_device
from tasks.logs import logger, redact_errors
from tasks.records import StageContext, StoredCoeffs, StoredFace, StoredQC, StoredRender
from tasks.retry import STAGE_TASK_OPTIONS

__all__ = ["flat_metrics", "qc_task", "thresholds_digest"]


def thresholds_digest(thresholds: Mapping[str, Mapping[str, float]] | None) -> str:
    """12 hex digits naming a batch's threshold overrides (part of the QC reuse check)."""
    canonical = json.dumps(thresholds or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def flat_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: value, name__verdict: verdict}`` of a QC record's metrics (one ``qc.parquet`` row's figures).

    Values that are not plain scalars (lists, dicts) are stored as JSON text so that every column has one
    type across rows."""
    flat: dict[str, Any] = {}
    for name, metric in sorted((record.get("metrics") or {}).items()):
        value = metric.get("value")
        if value is not None and not isinstance(value, (bool, int, float, str)):
            value = json.dumps(value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # one numeric type per column whatever a row measured
        flat[name] = value
        flat[f"{name}__verdict"] = metric.get("verdict")
    return flat


def _reusable(uri: str, render_key: str, protocol: str, digest: str) -> dict[str, Any] | None:
    """The stored QC record when it was made for this render, protocol and thresholds."""
    if not storage.exists(uri):
        return None
    try:
        record = storage.read_json(uri)
    except (OSError, ValueError):
        return None
    same = (
        record.get("render_key") == render_key
        and record.get("protocol") == protocol
        and record.get("thresholds_digest") == digest
    )
    return record if same else None


@task(
    name="quality-control",
    task_run_name="qc-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
@timed_stage("qc")
def qc_task(
    row: ManifestRow, face: StoredFace, render: StoredRender, coeffs: StoredCoeffs, ctx: StageContext
) -> StoredQC:
    """Decode the row's stored video and check it against its photo, speech and coefficients
    (``sadtalker.pipeline.quality_check``); write ``items/<id>/qc.json`` and the report thumbnails.

    A stored record for the same render key, QC protocol and thresholds is reused (``force`` redoes it).
    A missing or empty video fails the stage; a bad video gives verdict ``fail`` (the row fails at ``qc``
    in the flow) and is kept as it is."""
    from sadtalker import pipeline as pl  # when the task runs: see tasks/__init__.py
    from sadtalker.loader import Models

    start = time.perf_counter()
    item = ctx.paths.item(row.id)
    fs, path = storage.filesystem(render.video_uri)
    fs.invalidate_cache(path)
    video_bytes = int(fs.size(path) or 0)
    if video_bytes == 0:
        raise RuntimeError(f"video {redact(render.video_uri)} is empty")
    digest = thresholds_digest(ctx.qc_thresholds)
    record = None if ctx.force else _reusable(item.qc, render.key, pl.QC_PROTOCOL, digest)
    reused = record is not None
    if record is None:
        options = row.to_options(
            device=resolve_device(ctx.device), dtype=ctx.dtype, ref_eyeblink=None, ref_pose=None
        )
        with storage.scratch_dir() as tmp, InputFiles(tmp, ctx.allowed_prefixes) as inputs:
            report = pl.quality_check(
                storage.localize(render.video_uri, tmp),
                FaceRecord.load(storage.localize(face.cache_uri, tmp)),
                Coefficients.load(storage.localize(coeffs.cache_uri, tmp)),
                inputs.localize(row.image),  # both checked against the prefixes as they are opened
                inputs.localize(row.audio),
                options,
                models=Models.shared(ctx.weights),
                synthetic_weights=render.synthetic_weights,
                thresholds=ctx.qc_thresholds,
                upstream=render.frame_stats,
            )
        # Thumbnails first, then the record: a record on storage means its images are there too.
        for uri, image in ((item.qc_source, report.source_jpeg()), (item.qc_strip, report.strip_jpeg())):
            if image:
                storage.write_bytes(uri, image)
        record = {
            **report.to_dict(),
            "row_id": row.id,
            "video": render.video_uri,
            "video_bytes": video_bytes,
            "render_key": render.key,
            "thresholds_digest": digest,
        }
        storage.write_json(item.qc, record)
    verdict = str(record["verdict"])
    problems = tuple(str(p) for p in record.get("problems", []))
    log = logger().warning if verdict == "fail" else logger().info
    log("qc %s: %s%s", row.id, verdict, f" ({'; '.join(problems)})" if problems else "")
    return StoredQC(
        row_id=row.id,
        uri=item.qc,
        verdict=verdict,
        problems=problems,
        protocol=str(record["protocol"]),
        metrics=flat_metrics(record),
        video_bytes=video_bytes,
        reused=reused,
        seconds=time.perf_counter() - start,
    )
