"""Stage 4: quality control of the written video (a later issue adds image metrics; here: the basics)."""

from __future__ import annotations

import time

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from tasks.common import STAGE_TASK_OPTIONS, logger, redact_errors
from tasks.records import CoeffRecord, QCRecord, RenderRecord, StageContext

__all__ = ["qc_task"]


@task(
    name="quality-control",
    task_run_name="qc-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
def qc_task(row: ManifestRow, render: RenderRecord, coeffs: CoeffRecord, ctx: StageContext) -> QCRecord:
    """Check the row's stored video and write ``items/<id>/qc.json``: status ``ok`` or ``warn`` (with the
    reasons), the video's frame count, duration, size in bytes and the renderer's QC report (``sadtalker.qc``:
    frames, fps, audio, blank or frozen frames). A missing or empty video fails the row."""
    start = time.perf_counter()
    item = ctx.paths.item(row.id)
    fs, path = storage.filesystem(render.video_uri)
    fs.invalidate_cache(path)
    video_bytes = int(fs.size(path) or 0)
    if video_bytes == 0:
        raise RuntimeError(f"video {storage.redact(render.video_uri)} is empty")
    if render.qc is None:
        checks = ["the renderer made no QC report"]
    else:
        checks = [str(problem) for problem in render.qc.get("problems", [])]
    if render.synthetic_weights:
        checks.append("weights: synthetic (not the official checkpoints): the video is not a real result")
    status = "warn" if checks else "ok"
    storage.write_json(
        item.qc,
        {
            "row_id": row.id,
            "status": status,
            "checks": checks,
            "num_frames": render.num_frames,
            "duration": render.duration,
            "audio_seconds": coeffs.audio_seconds,
            "width": render.width,
            "height": render.height,
            "video_bytes": video_bytes,
            "video": render.video_uri,
            "render_key": render.key,
            "renderer_qc": render.qc,
        },
    )
    logger().info("qc %s: %s%s", row.id, status, f" ({'; '.join(checks)})" if checks else "")
    return QCRecord(
        row_id=row.id,
        uri=item.qc,
        status=status,
        num_frames=render.num_frames,
        duration=render.duration,
        audio_seconds=coeffs.audio_seconds,
        video_bytes=video_bytes,
        checks=tuple(checks),
        seconds=time.perf_counter() - start,
    )
