"""Stage 3: face + coefficients -> the row's video (render + mux), holding the GPU slot while rendering."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.inputs import InputFiles
from sadtalker.records import Coefficients, FaceRecord
from tasks.deadlines import timed_stage
from tasks.devices import render_slot, resolve_device
from tasks.keys import enhancer_fingerprint, render_key, weights_fingerprint
from tasks.logs import logger, redact_errors
from tasks.records import StageContext, StoredCoeffs, StoredFace, StoredRender
from tasks.retry import STAGE_TASK_OPTIONS

__all__ = ["render_task"]


def _previous(record_uri: str, video_uri: str, key: str) -> dict[str, Any] | None:
    """The stored render record when it has ``key`` and its video exists (the row is done)."""
    if not storage.exists(record_uri):
        return None
    record = storage.read_json(record_uri)
    if record.get("render_key") != key or not storage.exists(video_uri):
        return None
    return record


@task(
    name="render-video",
    task_run_name="render-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
@timed_stage("render")
def render_task(row: ManifestRow, face: StoredFace, coeffs: StoredCoeffs, ctx: StageContext) -> StoredRender:
    """Render ``items/<id>/video.mp4`` unless ``items/<id>/render.json`` already records this render key
    (or ``force``). The video is uploaded atomically, then the record: a failed or killed attempt leaves
    the previous good video (and its record) as they were. On CUDA the render holds one slot of the
    worker's GPU concurrency limit; downloads and uploads happen outside it."""
    from sadtalker import pipeline as pl  # when the task runs: see tasks/__init__.py
    from sadtalker.loader import Models

    start = time.perf_counter()
    models = Models.shared(ctx.weights)
    device = resolve_device(ctx.device)
    options = row.to_options(
        device=device, dtype=ctx.dtype, compile=ctx.compile, ref_eyeblink=None, ref_pose=None
    )
    key = render_key(
        face.key,
        coeffs.key,
        face.image_sha256,
        options,
        weights_fingerprint(models, options),
        enhancer=enhancer_fingerprint(models, options),  # None for `enhancer: none` (key unchanged)
    )
    # The name of exactly the files this configuration loads (results and qc.parquet carry it).
    weights_label = str(models.weights(options.size, options.preprocess).label)
    item = ctx.paths.item(row.id)
    previous = None if ctx.force else _previous(item.render_record, item.video, key)
    reused = previous is not None
    wait = 0.0
    if previous is None:
        with storage.scratch_dir() as tmp, InputFiles(tmp, ctx.allowed_prefixes) as inputs:
            image = inputs.localize(row.image)  # both checked against the prefixes as they are opened
            audio = inputs.localize(row.audio)
            face_record = FaceRecord.load(storage.localize(face.cache_uri, tmp))
            coefficients = Coefficients.load(storage.localize(coeffs.cache_uri, tmp))
            out = tmp / "video.mp4"
            with render_slot(device) as slot:
                video = pl.render_video(
                    face_record, coefficients, image, audio, out, options, models, progress=ctx.progress
                )
            wait = slot["wait"]
            storage.upload(video.path, item.video)
        previous = {
            "render_key": key,
            "row_id": row.id,
            "face_key": face.key,
            "landmark_backend": face.landmark_backend,  # the landmarker that found the face (in face_key)
            "coeffs_key": coeffs.key,
            "num_frames": int(video.num_frames),
            "duration": float(video.duration),
            "width": int(video.width),
            "height": int(video.height),
            "synthetic_weights": bool(video.synthetic_weights),
            "weights": weights_label,
            "device": device,
            "compiled": options.compile,  # through torch.compile: same key, frames within float rounding
            "seconds_per_frame": video.seconds_per_frame,
            "frame_stats": video.frame_stats,
        }
        storage.write_json(item.render_record, previous)
    seconds = time.perf_counter() - start
    verb = "reused" if reused else "rendered"
    logger().info("render %s: %s, %d frames in %.2f s", row.id, verb, previous["num_frames"], seconds)
    return StoredRender(
        row_id=row.id,
        key=key,
        video_uri=item.video,
        record_uri=item.render_record,
        num_frames=int(previous["num_frames"]),
        duration=float(previous["duration"]),
        width=int(previous["width"]),
        height=int(previous["height"]),
        synthetic_weights=bool(previous["synthetic_weights"]),
        device=str(previous.get("device", device)),
        reused=reused,
        seconds=seconds,
        wait_seconds=wait,
        seconds_per_frame=previous.get("seconds_per_frame"),
        frame_stats=previous.get("frame_stats"),
        weights_label=str(previous.get("weights") or weights_label),
        compiled=bool(previous.get("compiled", False)),
    )
