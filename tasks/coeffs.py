"""Stage 2: audio (+ the face) -> (T, 70) motion coefficients, content-addressed and reused."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from tasks.common import (
    STAGE_TASK_OPTIONS,
    cached_artefact,
    logger,
    pipeline,
    redact_errors,
    resolve_device,
    shared_models,
)
from tasks.keys import coeffs_key, weights_fingerprint
from tasks.records import CoeffRecord, FaceRecord, StageContext

__all__ = ["coefficients_task"]


@task(
    name="audio-to-coefficients",
    task_run_name="coeffs-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
def coefficients_task(row: ManifestRow, face: FaceRecord, ctx: StageContext) -> CoeffRecord:
    """Compute the coefficients of ``row.audio`` for ``face`` into ``<cache>/coeffs/<key>.npz`` unless they
    are there (or ``force``); copy them to ``items/<id>/coeffs.npz``. Reference files (``ref_eyeblink``,
    ``ref_pose``) are downloaded and hashed into the key."""
    start = time.perf_counter()
    pl, models = pipeline(), shared_models(ctx.weights)
    item = ctx.paths.item(row.id)
    with storage.scratch_dir() as tmp:
        audio = storage.localize(row.audio, tmp)
        audio_sha = storage.sha256_file(audio)
        refs = {name: getattr(row, name) for name in ("ref_eyeblink", "ref_pose")}
        local_refs = {name: storage.localize(uri, tmp) if uri else None for name, uri in refs.items()}
        refs_sha = {name: storage.sha256_file(p) if p else None for name, p in local_refs.items()}
        options = row.to_options(
            device=resolve_device(ctx.device),
            dtype=ctx.dtype,
            **{name: str(p) if p else None for name, p in local_refs.items()},
        )
        key = coeffs_key(face.key, audio_sha, options, refs_sha, weights_fingerprint(models, options))
        cache_uri = ctx.paths.coeffs_cache(key)

        def compute() -> Any:
            face_result = pl.FaceResult.load(storage.localize(face.cache_uri, tmp))
            return pl.audio_to_coefficients(audio, face_result, options, models)

        coeffs, reused = cached_artefact(
            key, cache_uri, item.coeffs, ctx.force, tmp, pl.CoeffResult.load, compute
        )
    seconds = time.perf_counter() - start
    verb = "reused" if reused else "computed"
    logger().info("coefficients %s: %s, %d frames in %.2f s", row.id, verb, coeffs.num_frames, seconds)
    return CoeffRecord(
        row_id=row.id,
        audio_sha256=audio_sha,
        key=key,
        cache_uri=cache_uri,
        uri=item.coeffs,
        num_frames=int(coeffs.num_frames),
        audio_seconds=float(coeffs.audio_seconds),
        reused=reused,
        seconds=seconds,
    )
