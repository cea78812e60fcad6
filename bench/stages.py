"""The pipeline's other stages, in one warm process: model load, photo -> 3DMM, audio -> coefficients,
the render stage without the generator (crop and ``full`` mode), paste-back, encode, QC.

- ``load``: a fresh :class:`sadtalker.loader.Models`: the landmark detector, the size's networks (one read
  of ``SadTalker_V0.0.2_<size>.safetensors``: 3DMM regressor, ExpNet, PoseVAE, keypoint detector,
  generator) and the render engine (mapping net; a copy on a GPU), each timed once (cold).
- ``photo_to_3dmm``: :func:`sadtalker.pipeline.extract_face`, ``crop`` on the test portrait and ``full``
  on the portrait set in a 768 x 1024 photo (:func:`bench.common.wide_photo`): warm (median of ``repeats``
  after a first, cold call, also recorded).
- ``audio_to_coeffs``: :func:`sadtalker.pipeline.audio_to_coefficients` on ``seconds`` of speech, warm
  (and cold: the first call).
- ``render_without_generator``: :func:`sadtalker.pipeline.render_video` over the same clip with the
  generator replaced by a stand-in (the source image, shifted a pixel per frame:
  :class:`bench.common.GeneratorStandIn`), per mode: everything the render stage does per frame besides the
  generator (mapping net + keypoints, uint8, resize, paste-back in ``full``, the streaming encode, the
  audio mux, and the clip's ``set_source``). The targets divide the ``full`` figure by the generator's own
  s/frame from the render section (same batch size): what a ``full``-mode clip costs over its render time
  (target <= 5 % at 256).
- ``paste_back``: :class:`sadtalker.video.PasteBack` (Poisson blend into the 768 x 1024 photo) per frame,
  one at a time, and in batches of ``batch_size`` through ``PasteBack.many`` (the render stage's way: a
  batch's frames in ``PASTE_THREADS`` threads).
- ``encode``: :class:`sadtalker.video.VideoWriter` (libx264 CRF 25 + AAC, one ffmpeg) of the clip's frames
  at the crop and full output sizes, the portrait shifted a pixel per frame; from opening the writer to the
  file in place.
- ``qc``: :func:`sadtalker.pipeline.quality_check` of the crop clip written above (a face, moving): once
  cold (QC models loading) and ``repeats`` times warm; video frames per second.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PORTRAIT,
    GeneratorStandIn,
    median,
    models_holder,
    peak_rss_mb,
    pipeline,
    render_options,
    speech_wav,
    weights_record,
    wide_photo,
)


def _cold_warm(fn, repeats: int) -> tuple[float, float, Any]:
    """(seconds of the first call, median seconds of ``repeats`` more calls, the last result)."""
    cold, result = _timed(fn, 1)
    warm, result = _timed(fn, repeats)
    return cold, warm, result


def _timed(fn, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return median(times), result


def _moving_frames(frames: int, width: int, height: int):
    """``frames`` (N, height, width, 3) uint8: the portrait resized to the output, shifted a pixel a frame."""
    import cv2
    import numpy as np

    image = cv2.cvtColor(cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.stack([np.roll(image, i % 32, axis=1) for i in range(frames)])


def _encode(path: Path, wav: Path, frames, batch: int) -> float:
    from sadtalker.video import VideoWriter

    start = time.perf_counter()
    with VideoWriter(path, audio=wav, num_frames=len(frames)) as writer:
        for i in range(0, len(frames), batch):
            writer.write(frames[i : i + batch])
    return time.perf_counter() - start


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Section ``stages``. Params: size, seconds, repeats, batch_size, device, dtype, weights."""
    from sadtalker.face.image import load_image
    from sadtalker.video import PasteBack, resize_frames
    from sadtalker.video.paste import PASTE_THREADS

    p = pipeline()
    size = int(params.get("size", 256))
    seconds = float(params.get("seconds", 2.0))
    repeats = int(params.get("repeats", 3))
    device, dtype = params.get("device", "cpu"), params.get("dtype", "float32")
    batch = int(params.get("batch_size", 2))
    crop = render_options(size=size, preprocess="crop", batch_size=batch, device=device, dtype=dtype)
    full = render_options(size=size, preprocess="full", batch_size=batch, device=device, dtype=dtype)
    out: dict[str, Any] = {
        "size": size,
        "seconds": seconds,
        "repeats": repeats,
        "batch_size": batch,
        "device": device,
        "dtype": dtype,
    }
    start_all = time.perf_counter()
    models = models_holder(params.get("weights"))
    load = {}
    for name, fn in (
        ("landmarker", models.landmarker),
        ("size_networks", lambda: models.recon_network(size)),
        ("engine_crop", lambda: models.animator(size, "crop", device, dtype)),
        ("engine_full", lambda: models.animator(size, "full", device, dtype)),
    ):
        load[name], _ = _timed(fn, 1)
    load["total"] = sum(load.values())
    out["load_s"] = load
    out["weights"] = weights_record(models, [size])

    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp_name:
        tmp = Path(tmp_name)
        photo = wide_photo(tmp / "photo.png")
        wav = speech_wav(tmp / "speech.wav", seconds)
        cold, crop_s, face = _cold_warm(lambda: p.extract_face(PORTRAIT, crop, models), repeats)
        _, full_s, face_full = _cold_warm(lambda: p.extract_face(photo, full, models), repeats)
        out["photo_to_3dmm_s"] = {"crop": crop_s, "full": full_s, "crop_cold": cold}

        cold, coeff_s, coeffs = _cold_warm(lambda: p.audio_to_coefficients(wav, face, crop, models), repeats)
        frames = coeffs.num_frames
        out["audio_to_coeffs"] = {
            "frames": frames,
            "s": coeff_s,
            "cold_s": cold,
            "s_per_audio_s": coeff_s / seconds,
            "frames_per_s": frames / coeff_s,
        }
        coeffs_full = p.audio_to_coefficients(wav, face_full, full, models)

        without = {}
        videos = {}
        for mode, options, record, image, clip in (
            ("crop", crop, face, PORTRAIT, coeffs),
            ("full", full, face_full, photo, coeffs_full),
        ):
            animator = models.animator(size, mode, device, dtype)
            stand_in = GeneratorStandIn(animator)
            try:
                path = tmp / f"{mode}.mp4"
                t0 = time.perf_counter()
                videos[mode] = p.render_video(record, clip, image, wav, path, options, models)
                without[mode] = (time.perf_counter() - t0) / clip.num_frames
            finally:
                stand_in.remove()
        out["render_without_generator_s_per_frame"] = without
        out["output_size"] = {mode: [v.width, v.height] for mode, v in videos.items()}

        # paste-back and encode, directly
        background = load_image(photo).pixels
        paste = PasteBack(background, face_full.crop_record().paste_box)
        rendered = resize_frames(_moving_frames(frames, size, size), size, size)
        t0 = time.perf_counter()
        for frame in rendered:
            paste(frame)
        out["paste_back_s_per_frame"] = (time.perf_counter() - t0) / frames
        t0 = time.perf_counter()  # as the render stage pastes: a batch's frames in parallel threads
        for first in range(0, frames, batch):
            paste.many(rendered[first : first + batch])
        out["paste_back_batched_s_per_frame"] = (time.perf_counter() - t0) / frames
        out["paste_threads"] = PASTE_THREADS
        encode = {}
        for mode, video in videos.items():
            moving = _moving_frames(frames, video.width, video.height)
            encode[mode] = {
                "width": video.width,
                "height": video.height,
                "s_per_frame": _encode(tmp / f"enc-{mode}.mp4", wav, moving, batch) / frames,
            }
            encode[mode]["fps"] = 1 / encode[mode]["s_per_frame"]
        out["encode"] = encode

        def qc():
            return p.quality_check(
                videos["crop"].path,
                face,
                coeffs,
                PORTRAIT,
                wav,
                crop,
                models=models,
                synthetic_weights=videos["crop"].synthetic_weights,
                upstream=videos["crop"].frame_stats,
            )

        cold, report = _timed(qc, 1)
        warm, _ = _timed(qc, repeats)
        out["qc"] = {
            "frames": frames,
            "cold_s": cold,
            "warm_s": warm,
            "fps_warm": frames / warm,
            "verdict": report.verdict,
        }
    out["peak_rss_mb"] = peak_rss_mb()
    out["wall_s"] = time.perf_counter() - start_all
    return out
