"""Lip sync without a lip-sync network: the mouth opening (68 landmarks on every output frame) against the
speech energy envelope, correlated at the best lag.

* Mouth opening, per frame: the mean distance between the inner-lip points facing each other (61-67,
  62-66, 63-65 in iBUG-68 order) divided by the distance between the two eye centres (36-41, 42-47), so
  it does not depend on the face's size in the frame. NaN where no face was tracked.
* Speech envelope, per frame: the RMS of the audio samples that play during that frame (``1/fps`` s:
  640 samples at 16 kHz and 25 fps), from the video's own audio track (what a viewer hears).
* Sync: the Pearson correlation of the two series with the envelope shifted by a lag ``L`` in
  ``-max_lag .. max_lag`` frames; ``sync_correlation`` is the best correlation and ``sync_offset_frames``
  its ``L``.

Sign convention: ``sync_offset_frames = L`` maximises ``corr(mouth[t], envelope[t + L])``. **Positive: the
audio is late** (the sound of a mouth movement comes ``L`` frames after the picture shows it); negative:
the audio is early. A clip muxed with its speech delayed by 200 ms at 25 fps gives +5. (syncnet_python's
"AV offset", and ``offset_frames`` of :mod:`sadtalker.qc.syncnet`, count the other way: theirs = -ours.)

Landmarks on every frame are kept cheap by detecting the face (dlib HOG) every ``detect_every`` frames and
running only the 68-point predictor (~6 ms at 256 px) on the frames in between, in the last box found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sadtalker.qc.face import Box, Detection, FaceModels

INNER_UPPER = (61, 62, 63)
INNER_LOWER = (67, 66, 65)
DETECT_EVERY = 5
MAX_LAG = 10  # frames each way (0.4 s at 25 fps)
MIN_OVERLAP = 8  # frames with both a mouth and an envelope value needed for a correlation


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap / inter-ocular distance of ``(68, 2)`` landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    gap = np.linalg.norm(points[list(INNER_UPPER)] - points[list(INNER_LOWER)], axis=1).mean()
    eyes = np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0))
    return float(gap / eyes) if eyes > 1e-6 else float("nan")


@dataclass
class MouthTracker:
    """Mouth opening on every frame, fed one decoded frame at a time."""

    models: FaceModels
    detect_every: int = DETECT_EVERY
    keep_boxes: bool = False
    openings: list[float] = field(default_factory=list)
    boxes: list[Box | None] = field(default_factory=list)
    box: Box | None = None
    _last_detect: int = -(10**9)

    def update(self, frame: np.ndarray, detections: list[Detection] | None = None) -> None:
        """Add the next frame. ``detections``: a detection the caller already ran on this frame (reused)."""
        index = len(self.openings)
        if detections is None and index - self._last_detect >= self.detect_every:
            detections = self.models.detect(frame)
        if detections is not None:
            self._last_detect = index
            self.box = detections[0].box if detections else None
        if self.box is None:
            self.openings.append(float("nan"))
        else:
            self.openings.append(mouth_opening(self.models.landmarks(frame, self.box)))
        if self.keep_boxes:
            self.boxes.append(self.box)

    def series(self) -> np.ndarray:
        return np.asarray(self.openings, dtype=np.float64)


def speech_envelope(audio: np.ndarray, frames: int, fps: float, sample_rate: int = 16_000) -> np.ndarray:
    """``(frames,)`` RMS of the samples playing during each frame (0 after the audio ends)."""
    audio = np.asarray(audio).reshape(-1)
    out = np.zeros(frames, dtype=np.float64)
    hop = sample_rate / fps
    for i in range(frames):
        # float64 chunk by chunk: a whole-clip float64 copy is 77 MB per 10 minutes of speech
        chunk = audio[int(round(i * hop)) : int(round((i + 1) * hop))].astype(np.float64)
        if chunk.size:
            out[i] = np.sqrt(np.mean(chunk * chunk))
    return out


@dataclass(frozen=True)
class SyncResult:
    correlation: float | None  # at the best lag
    offset_frames: int | None  # the best lag (positive: audio late)
    correlation_at_zero: float | None
    frames_used: int
    reason: str | None = None  # why there is no result


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 1e-12 else None


def best_lag(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG) -> SyncResult:
    """Correlation of ``mouth[t]`` with ``envelope[t + L]`` for every ``|L| <= max_lag`` (fewer for short
    clips, so that every lag keeps at least half the frames); the best ``L`` wins (ties: the smaller
    ``|L|``)."""
    mouth = np.asarray(mouth, dtype=np.float64)
    envelope = np.asarray(envelope, dtype=np.float64)
    valid = np.isfinite(mouth)
    used = int(valid.sum())
    if used < MIN_OVERLAP:
        return SyncResult(None, None, None, used, f"a face was tracked in only {used} frames")
    if float(np.nanstd(mouth)) < 1e-4:
        return SyncResult(0.0, None, 0.0, used, "the mouth does not move")
    if float(envelope.std()) < 1e-6:
        return SyncResult(None, None, None, used, "the audio is silent")
    frames = len(mouth)
    max_lag = max(0, min(max_lag, (frames - MIN_OVERLAP) // 2, frames // 4))
    results: dict[int, float] = {}
    for lag in range(-max_lag, max_lag + 1):
        t = np.arange(max(0, -lag), min(frames, len(envelope) - lag))
        t = t[valid[t]]
        if t.size < MIN_OVERLAP:
            continue
        r = _pearson(mouth[t], envelope[t + lag])
        if r is not None:
            results[lag] = r
    if not results:
        return SyncResult(None, None, None, used, "the speech envelope is flat where the face is tracked")
    lag = max(results, key=lambda k: (round(results[k], 9), -abs(k)))
    return SyncResult(results[lag], lag, results.get(0), used)
