"""The one-pair path: photo + speech -> talking-head mp4, in three stages with small records between them.

    face = extract_face(photo, options)                     # crop + 3DMM      (per photo)
    coeffs = audio_to_coefficients(speech, face, options)   # (T, 70) motion   (per photo + speech)
    video = render_video(face, coeffs, photo, speech, out, options)   # streamed frames -> mp4

The records between the stages are :mod:`sadtalker.records` (``FaceRecord``, ``Coefficients`` save to /
load from a small ``.npz``, so that batch tasks can cache and exchange them; ``VideoRecord``). Networks
come from :class:`sadtalker.loader.Models` (loaded once per process).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sadtalker.options import RenderOptions
from sadtalker.qc.thresholds import QC_PROTOCOL  # noqa: F401  (re-exported: the QC stage compares records by it)
from sadtalker.records import Coefficients, FaceRecord, VideoRecord
from sadtalker.timeouts import StageTimeouts, paused, within_deadline

log = logging.getLogger(__name__)

FPS = 25
_RENDER_LOCK = threading.Lock()  # one clip at a time per animator: the engine holds per-clip source state


@contextlib.contextmanager
def _renderer() -> Iterator[None]:
    """Hold this process's renderer; the wait for it does not count against the stage's deadline."""
    with paused():
        _RENDER_LOCK.acquire()
    try:
        yield
    finally:
        _RENDER_LOCK.release()


def _models(models):
    from sadtalker.loader import Models

    return models or Models.shared()


def extract_face(image_path: str | Path, options: RenderOptions, models=None) -> FaceRecord:
    """Photo -> crop and 3DMM coefficients (official ``CropAndExtract.generate``). A video given as the
    photo (by content) is its first frame, as in the reference.

    Raises:
        ImageError: the photo cannot be read.
        NoFaceError: no usable face.
    """
    from sadtalker.face.crop import crop_source, landmarks_to_source
    from sadtalker.face.image import load_image
    from sadtalker.face.landmarks import find_face
    from sadtalker.recon.extract import extract_3dmm

    models = _models(models)
    image = load_image(image_path)
    landmarker = models.landmarker()
    selection = None
    if options.preprocess != "resize":
        selection = find_face(landmarker, image.pixels, path=str(image_path))
    landmarks = selection.face.landmarks if selection else None
    record, source = crop_source(
        image.pixels, options.preprocess, landmarks, options.size, path=str(image_path)
    )
    # Stage B: landmarks re-detected on the S×S source, as the reference does; if the detector misses the
    # tighter crop, the stage-A landmarks mapped into it are as good.
    try:
        stage_b = find_face(landmarker, source, path=str(image_path), min_face_size=16).face.landmarks
    except Exception:
        if landmarks is None:
            raise
        stage_b = landmarks_to_source(landmarks, record)
    recon = extract_3dmm(models.recon_network(options.size), source, stage_b, path=str(image_path))
    return FaceRecord(
        source_image=source,
        coeff_3dmm=recon.coeff_3dmm.astype(np.float32),
        full_coeff=recon.full_coeff.astype(np.float32),
        landmarks=None if landmarks is None else np.asarray(landmarks, np.float32),
        crop=record.to_dict(),
        num_faces=selection.num_faces if selection else 1,
        backend=landmarker.name,
    )


def _reference_coefficients(
    path: str | None, options: RenderOptions, models, done: dict
) -> np.ndarray | None:
    """(N, >=70) coefficients of a reference: an ``.npz`` (``coeff_3dmm`` or ``coefficients``) or ``.npy``
    file, or a video reconstructed frame by frame (:mod:`sadtalker.coeffs.reference`; told apart by content).
    ``done``: references already read in this call (``ref_pose`` equal to ``ref_eyeblink`` is read once)."""
    if path is None:
        return None
    if str(path) not in done:
        from sadtalker.coeffs.reference import reference_coefficients

        done[str(path)] = reference_coefficients(path, options.preprocess, _models(models), size=options.size)
    return done[str(path)]


def reference_video_coefficients(path: str | Path, options: RenderOptions, models=None):
    """The per-frame 3DMM of a reference video (:class:`sadtalker.coeffs.reference.ReferenceCoefficients`,
    which saves to an ``.npz`` that is itself a valid coefficient reference): what the batch caches."""
    from sadtalker.coeffs.reference import video_reference_coefficients

    return video_reference_coefficients(path, options.preprocess, _models(models), size=options.size)


def audio_to_coefficients(
    audio_path: str | Path, face: FaceRecord, options: RenderOptions, models=None
) -> Coefficients:
    """Speech -> ``(T, 70)`` coefficients (official ``get_data`` and ``Audio2Coeff.generate``). Random
    draws come from ``options.seed`` only.

    ``options.ref_eyeblink`` / ``options.ref_pose``: local coefficient files or videos (a video's frames are
    reconstructed at 256 whatever ``options.size``, as the official code, which passes them no size;
    :mod:`sadtalker.coeffs.reference`).

    Raises:
        AudioError: the speech cannot drive a video.
        InputError: a reference cannot be read (``ReferenceVideoError``; ``NoFaceError``: no face in it).
    """
    import torch

    from sadtalker.audio import crop_to_frames, load_audio, mel_spectrogram, random_blink_curve
    from sadtalker.audio.mel import MelWindows
    from sadtalker.coeffs.generate import draw_latents, generate_coefficients

    models = _models(models)
    wav = load_audio(audio_path)
    cropped, frames = crop_to_frames(wav)
    windows = MelWindows(mel_spectrogram(cropped), frames)  # built 200 frames at a time, not all at once
    expnet, posevae = models.audio_networks(options.size)
    rng = np.random.default_rng([options.seed, 0xB1])
    references: dict[str, np.ndarray] = {}
    ref_eyeblink = _reference_coefficients(options.ref_eyeblink, options, models, references)
    ref_pose = _reference_coefficients(options.ref_pose, options, models, references)
    with torch.inference_mode():
        result = generate_coefficients(
            expnet,
            posevae,
            windows,
            face.coeff_3dmm[0],
            random_blink_curve(frames, rng),
            draw_latents(posevae, frames, options.seed),
            pose_style=options.pose_style,
            ref_eyeblink=ref_eyeblink,
            ref_pose=ref_pose,
        )
    return Coefficients(result.coefficients, frames, len(wav) / 16_000, result.blink)


def render_video(
    face: FaceRecord,
    coeffs: Coefficients,
    image_path: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    options: RenderOptions,
    models=None,
    progress: bool = False,
    enhancer=None,
) -> VideoRecord:
    """Coefficients -> frames -> mp4 with the speech muxed in (official ``get_facerender_data`` and
    ``AnimateFromCoeff.generate``). The render engine (:meth:`sadtalker.render.animate.FaceAnimator.frames`)
    turns the records into uint8 frames; this function does the media work on them.

    ``options.enhancer`` (``gfpgan``) restores the aligned S x S face of each rendered batch
    (:func:`sadtalker.enhance.enhance_frames`, on ``options.device``) before the resize and any paste-back.
    ``enhancer``: an optional extra :class:`sadtalker.video.FrameEnhancer` applied to each final frame.

    Frames are rendered ``options.batch_size`` at a time and streamed straight into ffmpeg, so memory does
    not grow with the clip's length. On a CUDA device the next batch renders while this one is post-processed
    (:class:`sadtalker.prefetch.Prefetch`); full-mode paste-back blends a batch's frames in parallel threads.
    The file appears at ``out_path`` only when complete (temp + rename).
    In ``full``/``extfull`` modes each frame is pasted back into the original photo.

    Inside a stage deadline (``sadtalker.timeouts``) the deadline is checked between batches and bounds the
    encoder: past it ``StageTimeout`` is raised, ffmpeg is killed and nothing is left at ``out_path``.
    """
    from sadtalker.enhance import enhance_frames
    from sadtalker.face.image import load_image
    from sadtalker.prefetch import Prefetch
    from sadtalker.qc import FrameStats
    from sadtalker.video import PasteBack, VideoWriter
    from sadtalker.video.postprocess import output_size, resize_frames

    models = _models(models)
    record = face.crop_record()
    animator = models.animator(
        options.size, options.preprocess, options.device, options.dtype, options.compile
    )
    # options.enhancer: restore the aligned S x S face of every frame, before the resize and any paste-back
    face_enhancer = None
    if options.enhancer != "none":
        face_enhancer = models.enhancer(options.enhancer, options.size, options.preprocess, options.device)
    frames = coeffs.num_frames
    width, height = output_size(options.size, record.crop_info_size)
    paste = None
    if record.is_full:
        paste = PasteBack(load_image(image_path).pixels, record.paste_box)
    stats = FrameStats()
    rendered = animator.frames(face, coeffs, options, stats)  # (B, S, S, 3) uint8; inputs checked now
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=frames, unit="frame", desc=Path(out_path).name)
    synthetic = models.weights(options.size, options.preprocess).synthetic
    # On CUDA the GPU renders the next batch while this one is pasted and encoded (a thread, stopped and
    # joined on any exit); on a CPU the renderer already uses every core.
    ahead = Prefetch if animator.device.type == "cuda" else contextlib.nullcontext
    start = time.perf_counter()
    with (
        _renderer(),
        VideoWriter(out_path, audio=audio_path, num_frames=frames) as writer,
        ahead(rendered) as rendered,
        # closed on any exit: the engine drops the clip's source state, also when the render stops early
        contextlib.closing(
            within_deadline(rendered, lambda: f"stopped after {writer.frames_written} of {frames} frames")
        ) as batches,
    ):
        try:
            for images in batches:
                if face_enhancer is not None:
                    images = enhance_frames(images, face_enhancer, options.device)
                images = resize_frames(images, width, height)  # (B, h, S, 3)
                if paste is not None:
                    images = paste.many(images)  # the batch's frames blended in parallel threads
                if enhancer is not None:
                    images = np.stack([enhancer(image) for image in images])
                stats.update(images)
                writer.write(images)
                if bar is not None:
                    bar.update(len(images))
        finally:
            if bar is not None:
                bar.close()
    elapsed = time.perf_counter() - start
    if synthetic:
        log.warning("%s was rendered with SYNTHETIC weights: it will not look like a face", out_path)
    if stats.nonfinite_frames:
        log.warning("%s: %d rendered frames had NaN / Inf values", out_path, stats.nonfinite_frames)
    out_w, out_h = writer.output_size or (width, height)
    return VideoRecord(
        path=str(out_path),
        num_frames=frames,
        duration=frames / FPS,
        width=int(out_w),
        height=int(out_h),
        synthetic_weights=synthetic,
        seconds_per_frame=elapsed / max(frames, 1),
        qc=None,
        frame_stats=stats.to_dict(),
    )


def qc_source_image(face: FaceRecord, image_path: str | Path) -> np.ndarray:
    """The picture a render should look like, for QC: the S x S source crop, or the original photo in
    ``full`` / ``extfull`` modes (whose output is that photo with the face pasted back)."""
    if face.crop_record().is_full:
        from sadtalker.face.image import load_image

        return load_image(image_path).pixels
    return face.source_image


def quality_check(
    video_path: str | Path,
    face: FaceRecord,
    coeffs: Coefficients,
    image_path: str | Path,
    audio_path: str | Path,
    options: RenderOptions | None = None,
    models=None,
    synthetic_weights: bool = False,
    thresholds=None,
    upstream: dict | None = None,
):
    """Full QC (:func:`sadtalker.qc.check_video`) of a rendered clip, with everything the pipeline knows:
    the source face (:func:`qc_source_image`), the speech, the coefficients, the frame count and the
    in-render statistics (``VideoRecord.frame_stats``). Returns a :class:`sadtalker.qc.QCReport`.

    ``models``: when given, face presence uses its landmarker (the project's, as the clip's face was found);
    otherwise dlib's detector. ``options`` is accepted for symmetry with the other stages (the crop record
    in ``face`` already says whether the output is the whole photo). ``thresholds``: overrides
    (:func:`sadtalker.qc.parse_threshold_overrides`).
    """
    from sadtalker.qc import check_video

    return check_video(
        video_path,
        qc_source_image(face, image_path),
        audio_path,
        coefficients=coeffs.coefficients,
        expected_frames=coeffs.num_frames,
        weights="synthetic" if synthetic_weights else "official",
        thresholds=thresholds,
        upstream=upstream,
        landmarker=models.landmarker() if models is not None else None,
    )


def render_pair(
    image_path: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    options: RenderOptions | None = None,
    models=None,
    progress: bool = False,
    thresholds=None,
    timeouts: StageTimeouts | None = None,
) -> VideoRecord:
    """The whole model for one photo + speech pair (models are loaded once per process and reused), then
    the full QC of the written file in ``VideoRecord.qc`` (a failed QC keeps the video: it is reported,
    not deleted). ``thresholds``: QC threshold overrides (:func:`sadtalker.qc.parse_threshold_overrides`).
    ``timeouts``: each stage's time limit (:class:`sadtalker.timeouts.StageTimeouts`; the render's scales
    with the clip's frames); past one, ``StageTimeout`` is raised. None: no limits."""
    import dataclasses

    options = options or RenderOptions()

    def stage(name: str, subject: str | Path, frames: int | None = None):
        if timeouts is None:
            return contextlib.nullcontext()
        return timeouts.deadline(name, Path(subject).name, frames)

    with stage("face", image_path):
        face = extract_face(image_path, options, models)
    with stage("coeffs", audio_path):
        coeffs = audio_to_coefficients(audio_path, face, options, models)
    with stage("render", out_path, coeffs.num_frames):
        video = render_video(face, coeffs, image_path, audio_path, out_path, options, models, progress)
    with stage("qc", out_path):
        report = quality_check(
            video.path,
            face,
            coeffs,
            image_path,
            audio_path,
            options,
            models=_models(models),
            synthetic_weights=video.synthetic_weights,
            thresholds=thresholds,
            upstream=video.frame_stats,
        )
    return dataclasses.replace(video, qc=report.to_dict())
