"""Stage 1: photo -> crop + 3DMM (a ``sadtalker.records.FaceRecord``), content-addressed and reused across
batches."""

from __future__ import annotations

import time

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.hashing import sha256_file
from sadtalker.inputs import InputFiles
from sadtalker.records import FaceRecord
from tasks.cache import cached_artefact
from tasks.deadlines import timed_stage
from tasks.devices import resolve_device
from tasks.keys import face_key, weights_fingerprint
from tasks.logs import logger, redact_errors
from tasks.records import StageContext, StoredFace
from tasks.retry import STAGE_TASK_OPTIONS

__all__ = ["extract_face_task"]


@task(
    name="extract-face",
    task_run_name="face-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
@timed_stage("face")
def extract_face_task(row: ManifestRow, ctx: StageContext) -> StoredFace:
    """Extract the face of ``row.image`` into ``<cache>/face/<key>.npz`` unless it is there (or ``force``);
    copy it to ``items/<id>/face.npz``. Raises ``InputError`` (no face, unreadable photo, a photo outside
    ``ctx.allowed_prefixes`` when opened: ``OutsidePrefixesError``): never retried.
    The key names the worker's landmark backend and its weights: a worker that fell back to dlib never
    reuses, or overwrites, a face that face-alignment found (nor the reverse)."""
    from sadtalker import pipeline as pl  # when the task runs: see tasks/__init__.py
    from sadtalker.loader import Models

    start = time.perf_counter()
    models = Models.shared(ctx.weights)
    options = row.to_options(
        device=resolve_device(ctx.device), dtype=ctx.dtype, ref_eyeblink=None, ref_pose=None
    )
    item = ctx.paths.item(row.id)
    with storage.scratch_dir() as tmp, InputFiles(tmp, ctx.allowed_prefixes) as inputs:
        image = inputs.localize(row.image)  # checked against the prefixes as it is opened
        image_sha = sha256_file(image)
        landmarks = models.landmarker_identity()
        key = face_key(image_sha, options, weights_fingerprint(models, options), landmarks)
        cache_uri = ctx.paths.face_cache(key)
        face, reused = cached_artefact(
            key,
            cache_uri,
            item.face,
            ctx.force,
            tmp,
            FaceRecord.load,
            lambda: pl.extract_face(image, options, models),
        )
    seconds = time.perf_counter() - start
    logger().info(
        "face %s: %s in %.2f s (landmarks: %s)",
        row.id,
        "reused" if reused else "extracted",
        seconds,
        landmarks["backend"],
    )
    return StoredFace(
        row_id=row.id,
        image_sha256=image_sha,
        key=key,
        cache_uri=cache_uri,
        uri=item.face,
        num_faces=int(face.num_faces),
        reused=reused,
        seconds=seconds,
        landmark_backend=str(landmarks["backend"]),
        landmark_weights=str(landmarks["weights"]),
    )
