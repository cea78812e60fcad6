"""Stage 2: audio (+ the face) -> (T, 70) motion coefficients, content-addressed and reused."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import task

from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.coeffs.reference import is_reference_video
from sadtalker.hashing import sha256_file
from sadtalker.inputs import InputFiles
from sadtalker.records import Coefficients, FaceRecord
from tasks.cache import cached_artefact
from tasks.deadlines import timed_stage
from tasks.devices import resolve_device
from tasks.keys import coeffs_key, reference_key, weights_fingerprint
from tasks.logs import logger, redact_errors
from tasks.records import StageContext, StoredCoeffs, StoredFace
from tasks.retry import STAGE_TASK_OPTIONS

__all__ = ["CachedReference", "coefficients_task", "reference_coefficients_cached"]


@dataclasses.dataclass(frozen=True)
class CachedReference:
    """A reference video's per-frame 3DMM: ``local`` is an ``.npz`` with ``coeff_3dmm`` (a valid coefficient
    reference for ``audio_to_coefficients``), ``cache_uri`` its content-addressed copy."""

    key: str
    cache_uri: str
    local: Path
    num_frames: int
    filled: int
    reused: bool
    seconds: float


def reference_coefficients_cached(
    video: Path, options: Any, ctx: StageContext, tmp: Path, pl: ModuleType, models: Any
) -> CachedReference:
    """The per-frame 3DMM of the reference video ``video`` (a local file), from
    ``<cache>/refs/<reference_key>.npz`` when it is there (unless ``ctx.force``), else computed
    (``pipeline.reference_video_coefficients``) and stored there: a reference shared by many rows, in
    either role and across batches, is processed once (rows of one process wait for one computation).
    ``pl`` and ``models``: the caller's ``sadtalker.pipeline`` module and ``Models``."""
    from sadtalker.coeffs.reference import ReferenceCoefficients

    start = time.perf_counter()
    sha = sha256_file(video)
    key = reference_key(sha, options, weights_fingerprint(models, options), models.landmarker_identity())
    cache_uri = ctx.paths.reference_cache(key)
    result, reused = cached_artefact(
        key,
        cache_uri,
        None,
        ctx.force,
        tmp,
        ReferenceCoefficients.load,
        lambda: pl.reference_video_coefficients(video, options, models),
    )
    local = Path(tmp) / f"ref-{key}.npz"
    if not local.exists():
        result.save(local)
    seconds = time.perf_counter() - start
    logger().info(
        "reference video %s: %s, %d frames (%d without a face, filled from neighbours) in %.2f s",
        Path(video).name,
        "reused" if reused else "processed",
        result.num_frames,
        len(result.filled),
        seconds,
    )
    return CachedReference(key, cache_uri, local, result.num_frames, len(result.filled), reused, seconds)


@task(
    name="audio-to-coefficients",
    task_run_name="coeffs-{row.id}",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
@timed_stage("coeffs")
def coefficients_task(row: ManifestRow, face: StoredFace, ctx: StageContext) -> StoredCoeffs:
    """Compute the coefficients of ``row.audio`` for ``face`` into ``<cache>/coeffs/<key>.npz`` unless they
    are there (or ``force``); copy them to ``items/<id>/coeffs.npz``. Reference files (``ref_eyeblink``,
    ``ref_pose``) are downloaded and hashed into the key; a reference video (by content) is reconstructed
    once into ``<cache>/refs/`` (:func:`reference_coefficients_cached`) and its key enters the key. Every
    input file is checked against ``ctx.allowed_prefixes`` as it is opened (``OutsidePrefixesError``)."""
    from sadtalker import pipeline as pl  # when the task runs: see tasks/__init__.py
    from sadtalker.loader import Models

    start = time.perf_counter()
    models = Models.shared(ctx.weights)
    item = ctx.paths.item(row.id)
    with storage.scratch_dir() as tmp, InputFiles(tmp, ctx.allowed_prefixes) as inputs:
        audio = inputs.localize(row.audio)  # checked against the prefixes as it is opened
        audio_sha = sha256_file(audio)
        refs = {name: getattr(row, name) for name in ("ref_eyeblink", "ref_pose")}
        local_refs = {name: inputs.localize(uri) if uri else None for name, uri in refs.items()}
        base = row.to_options(
            device=resolve_device(ctx.device), dtype=ctx.dtype, ref_eyeblink=None, ref_pose=None
        )
        refs_sha: dict[str, str | None] = {}
        ref_files: dict[str, str | None] = {}
        for name, local in local_refs.items():
            ref_files[name], refs_sha[name] = None, None
            if local is None:
                continue
            if is_reference_video(local):  # by content: its per-frame 3DMM, cached by the video's hash
                ref = reference_coefficients_cached(local, base, ctx, tmp, pl, models)
                ref_files[name], refs_sha[name] = str(ref.local), f"video:{ref.key}"
            else:
                ref_files[name], refs_sha[name] = str(local), sha256_file(local)
        options = base.model_copy(update=ref_files)  # the same references, as local files
        key = coeffs_key(face.key, audio_sha, options, refs_sha, weights_fingerprint(models, options))
        cache_uri = ctx.paths.coeffs_cache(key)

        def compute() -> Any:
            face_record = FaceRecord.load(storage.localize(face.cache_uri, tmp))
            return pl.audio_to_coefficients(audio, face_record, options, models)

        coeffs, reused = cached_artefact(
            key, cache_uri, item.coeffs, ctx.force, tmp, Coefficients.load, compute
        )
    seconds = time.perf_counter() - start
    verb = "reused" if reused else "computed"
    logger().info("coefficients %s: %s, %d frames in %.2f s", row.id, verb, coeffs.num_frames, seconds)
    return StoredCoeffs(
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
