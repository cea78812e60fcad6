"""``check_video``: every QC metric of one written video, measured on the file decoded back.

One pass over the decoded frames (one frame in memory at a time) feeds the frame checks and the mouth
tracker on every frame, and face detection, identity descriptors, CPBD and the report's thumbnails on a
few sampled frames (``max_samples``, evenly spread; identity on every other sample, the dominant cost at
~0.2 s per descriptor on one CPU core). The audio track is decoded once, at 16 kHz mono.

Metric names, groups and the record's layout are a fixed contract (``docs/qc.md``).
"""

from __future__ import annotations

import importlib
import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sadtalker.errors import StageTimeout
from sadtalker.qc import face as face_mod
from sadtalker.qc.decode import FrameReader, decode_audio
from sadtalker.qc.frames import FrameChecks, FrameStats
from sadtalker.qc.record import METRIC_SPECS, METRICS, Metric, QCReport
from sadtalker.qc.sharpness import cpbd, face_crop
from sadtalker.qc.sync import MouthTracker, best_lag, speech_envelope
from sadtalker.qc.thresholds import ABSOLUTE, SEVERITY, Threshold, resolve_thresholds

log = logging.getLogger(__name__)

WEIGHTS = ("official", "synthetic", "unknown")
NOT_MEANINGFUL = "not meaningful: synthetic weights"
SILENT_PEAK = 1e-4  # -80 dBFS: an audio track whose peak stays below this is silent
STRIP_FRAMES = 6
THUMB_HEIGHT = 96
DEFAULT_MAX_SIDE = 1024
MIN_BEAT_SECONDS = 2.0  # beat alignment of a shorter clip rests on one or two beats: not reported
SYNCNET_LOOSE = 256  # px: per-frame loose face crop kept for SyncNet (only when it will run)


class _Record:
    """Collects metrics and judges them against the thresholds."""

    def __init__(self, thresholds: Mapping[str, Threshold], weights: str):
        self.thresholds = thresholds
        self.weights = weights
        self.metrics: dict[str, Metric] = {}

    def set(self, name: str, value: Any, note: str | None = None, verdict: str | None = None) -> None:
        threshold, spec = self.thresholds.get(name), METRIC_SPECS[name]
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if verdict is None:
            if value is None:
                verdict = "skipped"
            elif threshold is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                verdict = threshold.verdict(abs(value) if name in ABSOLUTE else value)
            else:
                verdict = "info"
        if self.weights == "synthetic" and spec.face and verdict != "skipped":
            verdict = "not_meaningful"
            note = NOT_MEANINGFUL if not note else f"{NOT_MEANINGFUL}; {note}"
        self.metrics[name] = Metric(value, verdict, threshold, spec.unit, spec.group, note)

    def skip(self, names, note: str) -> None:
        for name in names:
            if name not in self.metrics:
                self.set(name, None, note)

    def finish(self, **kwargs) -> QCReport:
        self.skip([m.name for m in METRICS], "not measured")
        ordered = {m.name: self.metrics[m.name] for m in METRICS}
        counted = [(n, m) for n, m in ordered.items() if m.verdict in SEVERITY]
        verdict = max((m.verdict for _, m in counted), key=SEVERITY.__getitem__, default="pass")
        problems = [
            _problem(n, m)
            for n, m in sorted(counted, key=lambda nm: -SEVERITY[nm[1].verdict])
            if m.verdict != "pass"
        ]
        return QCReport(verdict=verdict, problems=problems, weights=self.weights, metrics=ordered, **kwargs)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _problem(name: str, metric: Metric) -> str:
    t = metric.threshold
    numeric = isinstance(metric.value, (int, float)) and not isinstance(metric.value, bool)
    limit = t.limit(metric.verdict) if t is not None else None
    # Show "value < limit" only when the limit is what decided (not for a verdict forced by a defect).
    if (
        limit is not None
        and numeric
        and t.verdict(abs(metric.value) if name in ABSOLUTE else metric.value) == metric.verdict
    ):
        value = f"|{_fmt(metric.value)}|" if name in ABSOLUTE else _fmt(metric.value)
        text = f"{name}: {value} {'<' if t.direction == 'min' else '>'} {_fmt(limit)}"
    else:
        text = f"{name}: {_fmt(metric.value)}"
    if metric.note:
        text += f" ({metric.note})"
    return f"{text} ({metric.verdict})"


def _thresholds(thresholds) -> dict[str, Threshold]:
    if (
        isinstance(thresholds, Mapping)
        and thresholds
        and all(isinstance(t, Threshold) for t in thresholds.values())
    ):
        return dict(thresholds)  # already resolved (e.g. once per batch)
    return resolve_thresholds(thresholds)


def _load_image(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return np.ascontiguousarray(image)
    from sadtalker.face.image import load_image

    return load_image(image).pixels


def _load_coefficients(coefficients) -> np.ndarray:
    if hasattr(coefficients, "coefficients"):  # a Coefficients
        coefficients = coefficients.coefficients
    if isinstance(coefficients, (str, Path)):
        path = str(coefficients)
        if path.endswith(".npy"):
            coefficients = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                key = next((k for k in ("coefficients", "coeff_3dmm") if k in data.files), None)
                if key is None:
                    raise ValueError(f"{path}: no 'coefficients' or 'coeff_3dmm' array")
                coefficients = data[key]
    array = np.asarray(coefficients, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] < 70:
        raise ValueError(f"coefficients must be (T, >=70), got {array.shape}")
    return array


def _thumb(image: np.ndarray, height: int = THUMB_HEIGHT) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _detect(landmarker, models: face_mod.FaceModels, image: np.ndarray) -> list[face_mod.Detection]:
    if landmarker is None:
        return models.detect(image)
    faces = landmarker.detect(np.ascontiguousarray(image))
    found = [face_mod.Detection(tuple(float(v) for v in f.box), float(f.score)) for f in faces]
    return sorted(found, key=lambda d: d.area, reverse=True)


def _source_face(models, image: np.ndarray):
    """Largest face of the source photo (detected on a copy of at most 1024 px): its box, descriptor and
    landmark face box (:func:`sadtalker.qc.face.features_box`), in source pixels; Nones without a face."""
    scale = min(1.0, DEFAULT_MAX_SIDE / max(image.shape[:2]))
    work = (
        image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    )
    found = models.detect(work)
    if not found:
        return None, None, None
    box = face_mod.scale_box(found[0].box, 1 / scale, 1 / scale)
    features = face_mod.scale_box(
        face_mod.features_box(models.landmarks(work, found[0].box)), 1 / scale, 1 / scale
    )
    return box, models.descriptor(work, found[0].box), features


def _source_cpbd(image: np.ndarray, box, scale: float) -> float | None:
    """CPBD of the source face brought to the output face's resolution (``scale`` = output face side /
    source face side): CPBD depends on the pixel scale, so both sides are measured at the same one. The
    mean over five crops shifted by 2 px, as a single 64 px crop varies by ~20 % with its alignment (the
    output side averages over its sampled frames)."""
    x0, y0, x1, y1 = box
    margin = 0.6 * max(x1 - x0, y1 - y0)  # resize only the neighbourhood of the face
    left, top = int(max(x0 - margin, 0)), int(max(y0 - margin, 0))
    right, bottom = int(min(x1 + margin, image.shape[1])), int(min(y1 + margin, image.shape[0]))
    patch = image[top:bottom, left:right]
    if abs(scale - 1) > 0.02:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        patch = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=interpolation)
    local = face_mod.scale_box((x0 - left, y0 - top, x1 - left, y1 - top), scale, scale)
    values = []
    for dx, dy in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)):
        crop = face_crop(patch, (local[0] + dx, local[1] + dy, local[2] + dx, local[3] + dy))
        value = cpbd(crop) if crop is not None else None
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else None


def _syncnet_hook(syncnet) -> tuple[Any, str | None, str | None]:
    """(module, weights description, None) when SyncNet will run, else (None, None, reason)."""
    if syncnet is False:
        return None, None, "SyncNet disabled"
    module = syncnet
    if module is None:
        try:
            module = importlib.import_module("sadtalker.qc.syncnet")
        except ImportError as exc:
            return None, None, f"SyncNet is not available ({exc})"
    if not hasattr(module, "lse_metrics"):
        return None, None, "SyncNet module has no lse_metrics"
    find = getattr(module, "find_syncnet_weights", None)
    if find is None:
        return module, "syncnet", None
    try:
        path, reason = find()
    except Exception as exc:  # a broken weights folder must not break QC
        return None, None, f"SyncNet weights: {exc}"
    if path is None:
        return None, None, reason or "no SyncNet weights"
    return module, Path(path).name, None


def _loose_crop(frame: np.ndarray, box) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """A square around ``box`` wide enough for syncnet_python's crop (3.6 x half the box side, padded with
    grey 110; that crop is 2.8 x, centred 0.4 x below the box centre), resized to :data:`SYNCNET_LOOSE`,
    and ``box`` in the crop's pixels. A grey square and None when there is no box."""
    if box is None:
        return np.full((SYNCNET_LOOSE, SYNCNET_LOOSE, 3), 110, np.uint8), None
    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) / 2
    side = int(round(3.6 * half))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2 + 0.4 * half))
    pad = side + 1
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
    crop = padded[top + pad : top + pad + side, left + pad : left + pad + side]
    scale = SYNCNET_LOOSE / max(side, 1)
    mapped = ((x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale)
    return cv2.resize(crop, (SYNCNET_LOOSE, SYNCNET_LOOSE)), mapped


class _FrameSpill:
    """Equal-shaped uint8 frames appended to an unnamed temporary file (``$TMPDIR``), read back as one
    memory-mapped ``(N, *shape)`` array: SyncNet needs every frame's face crop, 196 KB a frame at
    :data:`SYNCNET_LOOSE`, 2.9 GB per 10 minutes, which would otherwise sit in memory until the clip ends.
    The file disappears when closed (or collected)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
        self.count = 0
        self._file = tempfile.TemporaryFile(prefix="sadtalker-qc-")  # noqa: SIM115 (closed by close())

    def append(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 {self.shape} frame, got {frame.dtype} {frame.shape}")
        self._file.write(np.ascontiguousarray(frame).data)
        self.count += 1

    def array(self) -> np.ndarray:
        """The frames so far, ``(count, *shape)`` uint8 (a read-only memory map of the file)."""
        if self.count == 0:
            return np.empty((0, *self.shape), np.uint8)
        self._file.flush()
        return np.memmap(self._file, dtype=np.uint8, mode="r", shape=(self.count, *self.shape))

    def close(self) -> None:
        self._file.close()


def _spread(count: int, k: int) -> np.ndarray:
    """Up to ``k`` indices evenly spread over ``range(count)`` (both ends included)."""
    if count <= 0 or k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.round(np.linspace(0, count - 1, min(k, count))).astype(int))


def check_video(
    video: str | Path,
    image: str | Path | np.ndarray | None = None,
    audio: str | Path | np.ndarray | None = None,
    *,
    coefficients=None,
    expected_frames: int | None = None,
    weights: str = "unknown",
    thresholds=None,
    upstream: FrameStats | Mapping | None = None,
    face_region: tuple[float, float, float, float] | None = None,
    landmarker=None,
    max_samples: int = 16,
    syncnet=None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> QCReport:
    """Measure every QC metric of a written video and judge it (``docs/qc.md``).

    Args:
        video: a local video file (any container / codec ffmpeg reads).
        image: the source face: a path or ``(H, W, 3)`` uint8 RGB (the S x S source crop for crop / extcrop
            / resize renders, the original photo for full / extfull). None: identity and sharpness skipped.
        audio: the driving speech (path, or 16 kHz mono float32 samples): the reference for the motion
            metrics, and for lip sync when the video has no usable audio track. Lip sync otherwise uses the
            video's own track (what a viewer hears).
        coefficients: the clip's ``(T, 70)`` coefficients (array, ``Coefficients`` or ``.npz`` / ``.npy``
            path) for the motion metrics; None: skipped.
        expected_frames: T, when known (the pipeline): ``frame_count_error`` compares the decoded frames.
        weights: ``official``, ``synthetic`` (face-dependent metrics become ``not_meaningful``) or
            ``unknown``.
        thresholds: overrides (``{"identity_similarity": {"fail": 0.5}}`` or ``["name.fail=0.5"]``), or a
            resolved ``{name: Threshold}`` mapping; None: the defaults.
        upstream: the renderer's :class:`FrameStats` (or its ``to_dict()``), for ``nonfinite_frames``.
        face_region: where the face should be, ``(x0, y0, x1, y1)`` in video pixels. None: the face found
            in ``image`` scaled to the video when the aspect ratios match, else the median face box of the
            sampled frames.
        landmarker: a :class:`sadtalker.face.landmarks.FaceLandmarker` for face presence (the project's
            landmarker); None: dlib's HOG detector. The mouth tracker and identity always use dlib.
        max_samples: frames sampled for presence, region, sharpness and the strip (half for identity).
        syncnet: None: use :mod:`sadtalker.qc.syncnet` when it and its weights are there; False: skip LSE;
            or an object with ``lse_metrics`` (and optionally ``find_syncnet_weights``).
        max_side: decode frames downscaled to this longer side (None: native size).

    Never raises for a broken video (it fails QC with the reason); raises for unreadable *inputs*
    (``ImageError``, ``AudioError``, ``ValueError`` for bad arguments).
    """
    from sadtalker.video.ffmpeg import probe

    start = time.perf_counter()
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    limits = _thresholds(thresholds)
    record = _Record(limits, weights)
    video = Path(video)
    models_info: dict[str, Any] = {
        "landmarker": getattr(landmarker, "name", None) or "dlib",
        "mouth_tracker": face_mod.LANDMARK_MODEL,
        "face_descriptor": face_mod.DESCRIPTOR_MODEL,
        "syncnet": None,
    }
    # Inputs first: a bad input is the caller's error, not the video's.
    source = _load_image(image) if image is not None else None
    speech = None
    if audio is not None:
        if isinstance(audio, np.ndarray):
            speech = np.asarray(audio, dtype=np.float32).reshape(-1)
        else:
            from sadtalker.audio import load_audio

            speech = load_audio(audio)
    coeffs = _load_coefficients(coefficients) if coefficients is not None else None

    def finish(**extra) -> QCReport:
        return record.finish(
            models=models_info, seconds=time.perf_counter() - start, series=extra.pop("series", {}), **extra
        )

    # --- container -------------------------------------------------------------------------------------
    try:
        info = probe(video)
        readable = info.has_video and bool(info.width) and bool(info.height)
        why = "no video stream"
    except StageTimeout:  # out of time is not a verdict on the file
        raise
    except Exception as exc:  # InputError / FFmpegError: the file is damaged or not a video
        info, readable, why = None, False, str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
    if not readable:
        record.set("frames", 0, f"unreadable video: {why}", verdict="fail")
        record.skip([m.name for m in METRICS], "the video does not decode")
        thumb = _thumb(source) if source is not None else None
        return finish(video={"path": str(video), "frames": 0, "error": why}, source_thumb=thumb)

    fps = float(info.fps or 25.0)
    models = face_mod.face_models()
    hook, syncnet_name, syncnet_reason = _syncnet_hook(syncnet)

    # --- source face --------------------------------------------------------------------------------------
    source_box = source_descriptor = source_features = None
    if source is not None:
        source_box, source_descriptor, source_features = _source_face(models, source)

    reader = FrameReader(video, info.width, info.height, max_side)
    sx, sy = reader.scale
    dw, dh = reader.size
    region_note = None
    region = features_region = None  # where the face (its features, for sharpness) should be
    if face_region is not None:
        region = features_region = face_mod.scale_box(tuple(float(v) for v in face_region), sx, sy)
        region_note = "given"
    elif source_box is not None:
        ih, iw = source.shape[:2]
        if abs((iw / ih) / (info.width / info.height) - 1) < 0.02:
            region = face_mod.scale_box(source_box, dw / iw, dh / ih)
            features_region = face_mod.scale_box(source_features, dw / iw, dh / ih)
            region_note = "the source face, scaled to the video"

    # --- sampling plan ------------------------------------------------------------------------------------
    header_frames = info.frames or 0
    if info.video_duration:
        header_frames = max(header_frames, int(round(info.video_duration * fps)))
    planned = max(header_frames, expected_frames or 0)
    samples = _spread(planned, max_samples)  # frame indices
    sample_set = set(samples.tolist())
    identity_set = set(samples[::2].tolist()) if source_descriptor is not None else set()
    strip_set = set(samples[_spread(len(samples), STRIP_FRAMES)].tolist())

    checks = FrameChecks()
    tracker = MouthTracker(models, keep_boxes=hook is not None)
    loose = _FrameSpill((SYNCNET_LOOSE, SYNCNET_LOOSE, 3)) if hook is not None else None
    loose_boxes: list[tuple[float, float, float, float] | None] = []
    sampled = found = 0
    boxes: list[face_mod.Box] = []
    similarities: list[float] = []
    sharpness: list[float] = []
    sharp_sides: list[float] = []  # face box sides (decoded px) of those crops
    strip: list[np.ndarray] = []
    for index, frame in enumerate(reader):
        checks.update(frame)
        detections = None
        if index in sample_set:
            sampled += 1
            detections = _detect(landmarker, models, frame)
            face_box = features_region  # sharpness falls back to where the face should be
            if detections:
                found += 1
                best = detections[0]
                if region is not None:  # the face where it should be, if several
                    inside = [d for d in detections if face_mod.in_region(d.box, region)]
                    best = inside[0] if inside else best
                # Sharpness on the same content as the source's: the landmarks' face box, not the
                # detector's (whose size jumps between pyramid levels and changes CPBD by ~30 %).
                face_box = face_mod.features_box(models.landmarks(frame, best.box))
                boxes.append(best.box)
                if index in identity_set:
                    similarities.append(
                        face_mod.cosine(source_descriptor, models.descriptor(frame, best.box))
                    )
            if face_box is not None:
                crop = face_crop(frame, face_box)
                value = cpbd(crop) if crop is not None else None
                if value is not None:
                    sharpness.append(value)
                    sharp_sides.append(max(face_box[2] - face_box[0], face_box[3] - face_box[1]))
            if index in strip_set:
                strip.append(_thumb(frame))
        tracker.update(frame, detections if landmarker is None else None)
        if loose is not None:  # SyncNet needs every frame's face: keep a loose crop of each (on disk)
            crop, box = _loose_crop(frame, tracker.box)
            loose.append(crop)
            loose_boxes.append(box)
    decoded = reader.frames

    # --- container metrics --------------------------------------------------------------------------------
    damaged = None
    if decoded == 0:
        damaged = "no frame decodes"
    elif header_frames and decoded < header_frames - 1:
        damaged = f"only {decoded} of {header_frames} frames decode (truncated or damaged file)"
    elif reader.returncode not in (0, None) or reader.errors:
        damaged = "decoding errors: " + (
            reader.errors[0] if reader.errors else f"ffmpeg exit {reader.returncode}"
        )
    record.set("frames", decoded, damaged, verdict="fail" if damaged else None)
    record.set("fps", fps)
    record.set("width", int(info.width))
    record.set("height", int(info.height))
    record.set("codec", info.video_codec or reader.codec)
    pix_fmt = reader.pix_fmt
    if pix_fmt is None:
        record.set("pix_fmt", None, "not reported by the decoder")
    elif pix_fmt in ("yuv420p", "yuvj420p"):
        record.set("pix_fmt", pix_fmt, verdict="pass")
    else:
        record.set("pix_fmt", pix_fmt, "browsers play H.264 only in 4:2:0 (yuv420p)", verdict="warn")
    track, track_reason = decode_audio(video) if info.has_audio else (None, "no audio stream")
    track_silent = track is not None and float(np.max(np.abs(track))) < SILENT_PEAK
    if track is None:
        record.set("has_audio", False, track_reason, verdict="fail")
    elif track_silent:
        if speech is not None and float(np.max(np.abs(speech))) < SILENT_PEAK:
            record.set(
                "has_audio", False, "the audio track is silent, as is the input speech", verdict="warn"
            )
        else:
            record.set("has_audio", False, "the audio track is silent (muted)", verdict="fail")
    else:
        record.set("has_audio", True, verdict="pass")
    if info.has_audio and info.audio_duration is not None and info.video_duration:
        record.set("av_drift_frames", abs(info.video_duration - info.audio_duration) * fps)
    else:
        record.skip(["av_drift_frames"], "needs a video and an audio stream with durations")
    if expected_frames is not None:
        record.set(
            "frame_count_error", abs(decoded - int(expected_frames)), f"expected {int(expected_frames)}"
        )
    else:
        record.skip(["frame_count_error"], "the expected frame count is not known")

    # --- frames ---------------------------------------------------------------------------------------
    if decoded:
        record.set("blank_fraction", checks.fraction(checks.blank))
        record.set("black_fraction", checks.fraction(checks.black))
        record.set("washed_out_fraction", checks.fraction(checks.washed_out))
        record.set("longest_frozen_run", checks.longest_run)
    if upstream is not None:
        stats = upstream if isinstance(upstream, FrameStats) else FrameStats.from_dict(dict(upstream))
        if stats.float_frames:
            record.set("nonfinite_frames", stats.nonfinite_frames, f"of {stats.float_frames} rendered frames")
        else:
            record.skip(["nonfinite_frames"], "the renderer did not count float frames")
    record.skip(["nonfinite_frames"], "no in-render statistics (a stored file was checked)")
    record.skip(
        ["blank_fraction", "black_fraction", "washed_out_fraction", "longest_frozen_run"], "no frame decodes"
    )

    # --- face, identity, sharpness ------------------------------------------------------------------------
    if sampled:
        record.set("face_presence", found / sampled, f"{found} of {sampled} sampled frames")
        if region is None and boxes:
            region = face_mod.median_box(boxes)
            region_note = "the median face box of the sampled frames"
        if boxes and region is not None:
            inside = sum(face_mod.in_region(b, region) for b in boxes)
            record.set(
                "face_in_region",
                inside / len(boxes),
                f"{inside} of {len(boxes)} faces; region: {region_note}",
            )
        else:
            record.skip(["face_in_region"], "no face found")
    if source is None:
        record.skip(["identity_similarity", "sharpness_ratio", "source_cpbd"], "no source image")
    elif source_box is None:
        record.skip(
            ["identity_similarity", "sharpness_ratio", "source_cpbd"], "no face found in the source image"
        )
    if similarities:
        record.set(
            "identity_similarity", float(np.median(similarities)), f"median of {len(similarities)} frames"
        )
    record.skip(["identity_similarity"], "no face found in the sampled frames")
    if sharpness:
        out_cpbd = float(np.mean(sharpness))
        record.set("sharpness_cpbd", out_cpbd, f"mean of {len(sharpness)} sampled face crops")
        source_cpbd = None
        if source_features is not None:
            side = max(source_features[2] - source_features[0], source_features[3] - source_features[1])
            scale = float(np.median(sharp_sides)) / max(side, 1.0)
            source_cpbd = _source_cpbd(source, source_features, scale)
        if source_cpbd is not None:
            record.set("source_cpbd", source_cpbd, "at the output face's resolution")
            if source_cpbd > 0:
                record.set("sharpness_ratio", out_cpbd / source_cpbd)
    record.skip(
        ["sharpness_ratio", "sharpness_cpbd", "source_cpbd"], "no measurable edges in the face region"
    )
    record.skip(["face_presence", "face_in_region"], "no frame decodes")

    # --- sync -----------------------------------------------------------------------------------------------
    envelope_source, envelope_audio = None, None
    if track is not None and not track_silent:
        envelope_source, envelope_audio = "the video's audio track", track
    elif speech is not None:
        envelope_source, envelope_audio = "the input speech (no usable audio track)", speech
    mouth = tracker.series()
    series: dict[str, Any] = {"fps": fps, "mouth_opening": [], "speech_envelope": [], "best_lag_frames": None}
    if decoded:
        series["mouth_opening"] = [None if not math.isfinite(v) else round(float(v), 4) for v in mouth]
    if envelope_audio is None:
        record.skip(["sync_correlation", "sync_offset_frames", "lse_d", "lse_c"], "no audio")
    elif decoded:
        envelope = speech_envelope(envelope_audio, decoded, fps)
        series["speech_envelope"] = [round(float(v), 5) for v in envelope]
        sync = best_lag(mouth, envelope)
        series["best_lag_frames"] = sync.offset_frames
        note = f"vs {envelope_source}; {sync.frames_used} frames with a face"
        if sync.reason:
            note = f"{sync.reason}; {note}"
        record.set("sync_correlation", sync.correlation, note)
        offset_verdict = None
        offset_note = "positive: the audio is late"
        warn_limit = limits.get("sync_correlation").warn if limits.get("sync_correlation") else None
        if sync.correlation is not None and warn_limit is not None and sync.correlation < warn_limit:
            offset_verdict, offset_note = (
                "info",
                f"unreliable: the correlation {sync.correlation:.2f} is below {warn_limit}",
            )
        record.set(
            "sync_offset_frames",
            sync.offset_frames,
            offset_note if sync.offset_frames is not None else sync.reason,
            verdict=offset_verdict if sync.offset_frames is not None else None,
        )
        if hook is not None:
            models_info["syncnet"] = syncnet_name
            _lse(record, hook, loose.array(), loose_boxes, envelope_audio)
        else:
            record.skip(["lse_d", "lse_c"], syncnet_reason or "SyncNet not available")
    if loose is not None:
        loose.close()  # the crops' file is gone now (an error before this leaves it to the collector)

    # --- motion ---------------------------------------------------------------------------------------------
    if coeffs is None:
        record.skip(["pose_std_deg", "beat_align", "expression_speech_corr"], "no coefficients")
    else:
        _motion(record, coeffs, speech if speech is not None else envelope_audio, fps)

    video_info = {
        "path": str(video),
        "frames": decoded,
        "frames_in_header": header_frames,
        "fps": fps,
        "width": int(info.width),
        "height": int(info.height),
        "codec": info.video_codec or reader.codec,
        "pix_fmt": reader.pix_fmt,
        "duration": info.duration,
        "video_duration": info.video_duration,
        "audio_duration": info.audio_duration,
        "has_audio": bool(info.has_audio),
        "bytes": video.stat().st_size,
        "decoded_size": f"{dw}x{dh}",
        "face_region": [round(v, 1) for v in region] if region is not None else None,
        "decode_errors": reader.errors[:5],
    }
    return finish(
        video=video_info,
        series=series,
        source_thumb=_thumb(source) if source is not None else None,
        strip=np.concatenate(strip, axis=1) if strip else None,
    )


def _lse(record: _Record, hook, loose: np.ndarray, boxes: list, audio: np.ndarray) -> None:
    """LSE-D / LSE-C from the SyncNet hook on the tracked face crops: ``loose`` ``(N, S, S, 3)`` (a memory
    map); the hook's :class:`~sadtalker.qc.syncnet.FaceCrops` cuts SyncNet's crops from it one at a time
    (else its ``syncnet_crops``, all at once; else the loose crops go as they are)."""
    tracked = [i for i, b in enumerate(boxes) if b is not None]
    if not tracked or len(tracked) < len(boxes) // 2:
        record.skip(["lse_d", "lse_c"], "the face was tracked in too few frames for SyncNet")
        return
    # Frames without a box borrow the nearest tracked frame's (their crop is grey anyway).
    nearest = np.asarray(tracked)[
        np.abs(np.arange(len(boxes))[:, None] - np.asarray(tracked)[None]).argmin(1)
    ]
    filled = np.asarray([boxes[i] for i in nearest], dtype=np.float64)
    try:
        crops_fn = getattr(hook, "FaceCrops", None) or getattr(hook, "syncnet_crops", None)
        crops = crops_fn(loose, filled) if crops_fn is not None else loose
        result = hook.lse_metrics(crops, np.asarray(audio, dtype=np.float32))
    except Exception as exc:  # too short a clip, a weights problem: say so, do not fail QC on it
        log.warning("SyncNet: %s", exc)
        record.skip(["lse_d", "lse_c"], f"SyncNet: {exc}")
        return
    notes = []
    if result.get("offset_frames") is not None:  # syncnet_python counts the other way round
        notes.append(
            f"SyncNet offset {-int(result['offset_frames']):+d} frames (positive: the audio is late)"
        )
    if result.get("sha256"):
        notes.append(f"weights sha256 {str(result['sha256'])[:12]}")
    note = "; ".join(notes) or None
    record.set("lse_d", float(result["lse_d"]), note)
    record.set("lse_c", float(result["lse_c"]), note)


def _motion(record: _Record, coeffs: np.ndarray, audio: np.ndarray | None, fps: float) -> None:
    from sadtalker.qc import motion

    record.set("pose_std_deg", motion.pose_std_deg(coeffs), f"{len(coeffs)} frames of coefficients")
    if audio is None:
        record.skip(["beat_align", "expression_speech_corr"], "no audio")
        return
    envelope = speech_envelope(audio, len(coeffs), fps)
    corr = motion.expression_speech_corr(coeffs, envelope)
    record.set(
        "expression_speech_corr", corr, None if corr is not None else "flat expression or speech energy"
    )
    if len(coeffs) < MIN_BEAT_SECONDS * fps:
        record.skip(
            ["beat_align"], f"the clip is shorter than {MIN_BEAT_SECONDS:g} s: too few beats to align"
        )
        return
    beats = motion.audio_beats(audio, fps)
    moves = motion.motion_beats(coeffs, fps)
    score = motion.beat_align_score(beats, moves, fps)
    note = f"{len(beats)} audio beats, {len(moves)} motion beats"
    record.set("beat_align", score, note if score is not None else f"no beat to align ({note})")
