"""Faces in QC: detection, 68 landmarks and identity descriptors, all from dlib and
``face-recognition-models`` (offline, CPU), loaded once per process.

Identity: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, a 29-layer ResNet
trained by Davis King on ~3 million faces, 99.38 % on LFW) on the face chip aligned by the 5-point model
(``shape_predictor_5_face_landmarks.dat``), compared by cosine similarity.

Why the identity threshold is ``fail < 0.90``, ``warn < 0.93``: dlib's descriptors are not unit vectors
(norms measured 1.36-1.46) and all faces share a large common component, so the cosine of two different
people is high, about 0.8; dlib's own decision rule ("same person" below a Euclidean distance of 0.6,
the LFW-calibrated threshold used by ``face_recognition``) corresponds to a cosine of about 0.91 at those
norms (``d² = |a|² + |b|² - 2|a||b|cos``). Measured on the test photos (tests/data, and face_recognition's
public-domain White House test photos):

=====================================================  ==========
pair                                                   cosine
=====================================================  ==========
portrait / same portrait rotated 8° and scaled 1.05    1.000
portrait / same, JPEG quality 30                       0.998
portrait / same, Gaussian blur σ = 2                   0.975
Obama / two other photos of Obama (other years)        0.95-0.97
portrait / Obama, portrait / Biden, Obama / Biden      0.80-0.84
=====================================================  ==========

So a render that keeps the person scores above 0.95 even when blurred or re-encoded, a different person
scores ~0.82, and the fail limit sits at dlib's own decision boundary with a warn band above it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadtalker.face.landmarks import dlib_model_path

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (exclusive ends)

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1"
LANDMARK_MODEL = "dlib-hog+shape_predictor_68"

_LOAD_LOCK = threading.Lock()
_MODELS: FaceModels | None = None


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)


class FaceModels:
    """dlib's HOG detector, 68- and 5-point shape predictors and ResNet descriptor. One lock per model:
    dlib's objects keep per-call buffers and are not safe to call from two threads at once."""

    def __init__(self, folder: Path | None = None):
        import dlib

        def path(name: str) -> str:
            return str(folder / name) if folder else str(dlib_model_path(name))

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor68 = dlib.shape_predictor(path("shape_predictor_68_face_landmarks.dat"))
        self.predictor5 = dlib.shape_predictor(path("shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(path("dlib_face_recognition_resnet_model_v1.dat"))
        self._detect_lock = threading.Lock()
        self._predict_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def _rect(self, box: Box):
        x0, y0, x1, y1 = (round(v) for v in box)
        return self._dlib.rectangle(int(x0), int(y0), int(x1) - 1, int(y1) - 1)

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[Detection]:
        """Faces in ``(H, W, 3)`` uint8 RGB, largest first. ``upsample=None``: try at native size (faces of
        80 px and up, ~4x cheaper), then once upsampled (40 px and up) when nothing was found."""
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        for level in (upsample,) if upsample is not None else (0, 1):
            with self._detect_lock:
                rects, scores, _ = self.detector.run(image, level, 0.0)
            if rects:
                found = [
                    Detection(
                        (
                            float(max(r.left(), 0)),
                            float(max(r.top(), 0)),
                            float(min(r.right() + 1, width)),
                            float(min(r.bottom() + 1, height)),
                        ),
                        float(s),
                    )
                    for r, s in zip(rects, scores, strict=True)
                ]
                return sorted(found, key=lambda d: d.area, reverse=True)
        return []

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """``(68, 2)`` float32 iBUG-68 landmarks inside ``box``."""
        with self._predict_lock:
            shape = self.predictor68(np.ascontiguousarray(image), self._rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def descriptor(self, image: np.ndarray, box: Box) -> np.ndarray:
        """``(128,)`` float32 identity descriptor of the face in ``box`` (5-point alignment, no jitter)."""
        image = np.ascontiguousarray(image)
        rect = self._rect(box)
        with self._predict_lock:
            shape = self.predictor5(image, rect)
        with self._encode_lock:
            vector = self.encoder.compute_face_descriptor(image, shape, 0)
        return np.asarray(vector, dtype=np.float32)


def face_models() -> FaceModels:
    """The process-wide :class:`FaceModels` (loaded on first use; concurrent first calls load once)."""
    global _MODELS
    if _MODELS is None:
        with _LOAD_LOCK:
            if _MODELS is None:
                _MODELS = FaceModels()
    return _MODELS


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def scale_box(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def clamp_box(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), width),
        min(max(y0, 0.0), height),
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
    )


def in_region(box: Box, region: Box) -> bool:
    """A detected face is where it should be: its centre inside ``region`` and its size within a factor
    of 2 of the region's (a face found elsewhere, or a much smaller / larger one, is another face)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = region[0] <= cx <= region[2] and region[1] <= cy <= region[3]
    size = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-6))
    expected = np.sqrt(max((region[2] - region[0]) * (region[3] - region[1]), 1e-6))
    return bool(inside and 0.5 <= size / expected <= 2.0)


def features_box(landmarks: np.ndarray) -> Box:
    """The box of the facial features (68-point landmarks 17-67: brows, eyes, nose, mouth; not the jaw line)
    grown by 15 % on each side: a face region that follows the face's content, for sharpness."""
    points = np.asarray(landmarks, dtype=np.float64)[17:68]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    mx, my = 0.15 * (x1 - x0), 0.15 * (y1 - y0)
    return (float(x0 - mx), float(y0 - my), float(x1 + mx), float(y1 + my))


def median_box(boxes: list[Box]) -> Box | None:
    if not boxes:
        return None
    return tuple(float(v) for v in np.median(np.asarray(boxes, dtype=np.float64), axis=0))  # type: ignore[return-value]
