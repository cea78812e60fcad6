"""Face detection and 68 landmarks (iBUG-68 order) behind one small interface, with two backends.

The reference uses facexlib's RetinaFace + AWing FAN, 98 points reduced to 68 by facexlib's
``landmark_98_to_68`` (``Preprocesser.get_landmark`` in src/utils/croper.py, ``KeypointExtractor`` in
src/face3d/extract_kp_videos_safe.py), whose weights are not redistributable here; the landmarks only have
to be good 68-point landmarks, so:

* :class:`FaceAlignmentBackend` (production default): face-alignment's S3FD detector + 2D-FAN-4. Never
  downloads anything itself: its two weight files must already be in torch hub's cache, verified by
  :mod:`sadtalker.weights.face_models`.
* :class:`DlibBackend` (offline, small): dlib's HOG detector + 68-point shape predictor from the
  ``face-recognition-models`` package.

Each backend has an ``identity``: its name and one SHA-256 over the files its results come from
(:func:`landmarker_identity`); face cache keys include it, so faces found by one backend (or by other
weights) are never reused by another.

Channel order: both backends take RGB, as they were trained (the reference gives RetinaFace an RGB
array as if it were BGR when it finds the crop box, and its FAN sees BGR; those swaps belong to facexlib's
networks and have no meaning for these). Boxes are clamped to the image (the reference slices the image
with the raw detection box, so a negative coordinate counts from the far end; that cannot happen here).
:func:`find_face` picks one face, detecting on a downscaled copy of very large photos, and raises
:class:`NoFaceError` when there is no usable face.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np

from sadtalker.errors import NoFaceError

log = logging.getLogger(__name__)

Selection = Literal["largest", "best"]
#: Faces whose box is smaller than this (shorter side, original pixels) are not usable by default.
MIN_FACE_SIZE = 64
#: Photos with a longer side above this are detected on a copy downscaled to it.
MAX_DETECT_SIDE = 4096


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face.

    Attributes:
        box: (x1, y1, x2, y2) detection box in image pixels (exclusive ends), clamped to the image.
        score: the detector's confidence (dlib: SVM margin, about 0-3; S3FD: probability 0-1).
        landmarks: (68, 2) float32 (x, y) in image pixels, iBUG-68 order (jaw 0-16, brows 17-26, nose
            27-35, eyes 36-47, mouth 48-67).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@runtime_checkable
class FaceLandmarker(Protocol):
    """Anything that finds faces with 68 landmarks in an RGB image."""

    name: str

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """All faces in ``image`` ((H, W, 3) uint8 RGB), in any order; an empty list when none."""
        ...


def _clamp_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def dlib_model_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """A model file of the ``face-recognition-models`` package, found without importing it (its
    ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-recognition-models package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in face-recognition-models")
    return path


def dlib_files(predictor_path: str | Path | None = None) -> dict[str, Path]:
    """The files the dlib backend's landmarks come from, by stable name: the 68-point model (default: the
    one in ``face-recognition-models``) and dlib's compiled module ``_dlib_pybind11`` (``dlib-bin``), which
    holds the HOG face detector. Found without importing dlib."""
    spec = importlib.util.find_spec("_dlib_pybind11")
    if spec is None or not spec.origin:
        raise FileNotFoundError("dlib's compiled module _dlib_pybind11 is not installed (dlib-bin)")
    predictor = Path(predictor_path or dlib_model_path())
    return {predictor.name: predictor, "_dlib_pybind11": Path(spec.origin)}


def weights_digest(files: Mapping[str, Path]) -> str:
    """One SHA-256 over ``{name: file}``: each file's SHA-256 (computed once per process per file, see
    :func:`sadtalker.hashing.sha256_file`) with its name, in name order."""
    from sadtalker.hashing import sha256_file

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{sha256_file(files[name])}\n".encode())
    return digest.hexdigest()


class DlibBackend:
    """dlib HOG frontal-face detector + 68-point shape predictor (offline, CPU, ~30 ms per 512 px photo).

    Licence: dlib is Boost-licensed, but the 68-point model (``shape_predictor_68_face_landmarks.dat``,
    shipped by ``face-recognition-models``) was trained on the iBUG 300-W data set, whose terms exclude
    commercial use. Use the face-alignment backend where that matters.

    Args:
        upsample: how many times dlib upsamples before detecting (each finds ~2× smaller faces and costs
            ~4×). None: 1 for photos up to 2.5 MP, else 0.
        predictor_path: the 68-point model; default: the one in ``face-recognition-models``.
    """

    name = "dlib"

    def __init__(self, upsample: int | None = None, predictor_path: str | Path | None = None):
        import dlib

        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        predictor = Path(predictor_path or dlib_model_path())
        self._predictor = dlib.shape_predictor(str(predictor))
        self.identity = {"backend": self.name, "weights": weights_digest(dlib_files(predictor))}
        self._rectangle = dlib.rectangle
        self._lock = threading.Lock()  # one detector object shared by threads: serialise calls

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        image = _check_image(image)
        height, width = image.shape[:2]
        upsample = self.upsample if self.upsample is not None else int(width * height <= 2_500_000)
        with self._lock:
            rects, scores, _ = self._detector.run(image, upsample, 0.0)
            shapes = [self._predictor(image, rect) for rect in rects]
        faces = []
        for rect, score, shape in zip(rects, scores, shapes, strict=True):
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = _clamp_box((rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1), width, height)
            faces.append(DetectedFace(box=box, score=float(score), landmarks=points))
        return faces


class FaceAlignmentBackend:
    """face-alignment (Bulat & Tzimiropoulos 2017): S3FD detector + 2D-FAN-4 heatmap network, 68 points.

    The weights are never downloaded here: both files must be in ``torch.hub.get_dir()/checkpoints``
    (where face-alignment looks) and pass their hash check, else :class:`WeightsError` says how to fetch
    them (``sadtalker-batch weights fetch face-alignment``). ``torch.compile`` is off and the input is not
    flipped (one FAN pass, like the reference's landmark network). The first detection in a process pays
    5-10 s of numba JIT compilation (face-alignment's heatmap decoding); later ones do not.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        detector_threshold: S3FD score below which boxes are dropped (face-alignment's default 0.5).
    """

    name = "face-alignment"

    def __init__(self, device: str = "cpu", detector_threshold: float = 0.5):
        from sadtalker.weights.face_models import resolve_face_alignment_weights

        paths = resolve_face_alignment_weights()  # raises before face-alignment could try to download
        self.identity = {"backend": self.name, "weights": weights_digest(paths)}
        import face_alignment

        self._model = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            flip_input=False,
            face_detector="sfd",
            face_detector_kwargs={
                "path_to_detector": str(paths["s3fd-619a316812.pth"]),
                "filter_threshold": detector_threshold,
            },
            compile=False,
        )
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        image = _check_image(image)
        height, width = image.shape[:2]
        with self._lock, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No faces were detected")  # an empty list says it
            landmarks, _, boxes = self._model.get_landmarks_from_image(
                image, return_bboxes=True, return_landmark_score=True
            )
        if not landmarks:
            return []
        faces = []
        for points, box in zip(landmarks, boxes, strict=True):
            box = np.asarray(box, dtype=np.float64)
            faces.append(
                DetectedFace(
                    box=_clamp_box(tuple(box[:4]), width, height),
                    score=float(box[4]) if box.shape[0] > 4 else 1.0,
                    landmarks=np.asarray(points, dtype=np.float32)[:, :2],
                )
            )
        return faces


#: The landmark backends by name, each built from the device it may run on (dlib: the CPU only).
LANDMARKERS: dict[str, Callable[[str], FaceLandmarker]] = {
    "face-alignment": lambda device: FaceAlignmentBackend(device=device),
    "dlib": lambda device: DlibBackend(),
}
LandmarkerKind = Literal["auto", "face-alignment", "dlib"]


def resolve_landmarker_kind(kind: LandmarkerKind = "auto") -> str:
    """The backend ``kind`` stands for: ``auto`` is ``face-alignment`` when its two weight files are in place
    and verified, else ``dlib`` (with a warning); the others are themselves."""
    if kind == "auto":
        from sadtalker.errors import WeightsError
        from sadtalker.weights.face_models import resolve_face_alignment_weights

        try:
            resolve_face_alignment_weights()
        except WeightsError as exc:
            log.warning("landmarks: using the dlib backend (%s)", exc)
            return "dlib"
        return "face-alignment"
    if kind in LANDMARKERS:
        return kind
    raise ValueError(f"unknown landmark backend {kind!r}; choose one of auto, {', '.join(LANDMARKERS)}")


def landmarker_identity(kind: LandmarkerKind = "auto") -> dict[str, str]:
    """``{"backend": name, "weights": SHA-256}`` of the backend ``kind`` resolves to, without building it:
    face-alignment: its two verified weight files; dlib: the 68-point model and the compiled module that
    holds the detector (:func:`weights_digest`). The same as the built backend's ``identity``.

    Raises:
        WeightsError: ``face-alignment`` asked for and its files are missing or corrupt.
    """
    backend = resolve_landmarker_kind(kind)
    if backend == "face-alignment":
        from sadtalker.weights.face_models import resolve_face_alignment_weights

        files: Mapping[str, Path] = resolve_face_alignment_weights()
    else:
        files = dlib_files()
    return {"backend": backend, "weights": weights_digest(files)}


def make_landmarker(kind: LandmarkerKind = "auto", device: str = "cpu") -> FaceLandmarker:
    """Build a landmark backend by name.

    Args:
        kind: ``face-alignment`` (raises :class:`WeightsError` when its weights are not in place), ``dlib``,
            or ``auto``: face-alignment when its two weight files are in place and verified, else dlib (with
            a warning).
        device: for face-alignment (dlib runs on the CPU).
    """
    return LANDMARKERS[resolve_landmarker_kind(kind)](device)


@dataclass(frozen=True, eq=False)
class FaceSelection:
    """The face chosen in one photo.

    Attributes:
        face: the chosen face, in original-image pixels.
        num_faces: how many faces the detector found (any size).
        num_usable: how many of them passed the size limit.
        detect_scale: the factor the photo was downscaled by for detection (1.0 when not).
        backend: the landmarker's name.
    """

    face: DetectedFace
    num_faces: int
    num_usable: int
    detect_scale: float
    backend: str


def find_face(
    landmarker: FaceLandmarker,
    image: np.ndarray,
    *,
    path: str = "<image>",
    select: Selection = "largest",
    min_face_size: float = MIN_FACE_SIZE,
    max_detect_side: int = MAX_DETECT_SIDE,
) -> FaceSelection:
    """Detect faces and pick one: the largest box (default) or the best score. When the detector finds
    more than one face (usable or not), a warning names the photo and says how many.

    Photos with a side above ``max_detect_side`` are detected on a copy downscaled to that side
    (OpenCV area interpolation); boxes and landmarks are mapped back to original pixels.

    Args:
        image: (H, W, 3) uint8 RGB.
        path: the photo's name, for the error message.
        min_face_size: smallest usable box side in original pixels.

    Raises:
        NoFaceError: no face, or every face smaller than ``min_face_size``.
    """
    if select not in ("largest", "best"):
        raise ValueError(f"select must be 'largest' or 'best', got {select!r}")
    height, width = image.shape[:2]
    longest = max(width, height)
    scale = 1.0
    work = image
    if longest > max_detect_side:
        scale = max_detect_side / longest
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        work = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        log.info("%s: %dx%d photo detected at %dx%d", path, width, height, *small)
    faces = landmarker.detect(work)
    if scale != 1.0:
        sx, sy = work.shape[1] / width, work.shape[0] / height
        faces = [_unscale(face, sx, sy, width, height) for face in faces]
    if not faces:
        raise NoFaceError(path, f"no face found ({landmarker.name} detector, {width}×{height} px photo)")
    usable = [f for f in faces if min(f.width, f.height) >= min_face_size]
    if not usable:
        biggest = max(min(f.width, f.height) for f in faces)
        raise NoFaceError(
            path,
            f"face too small: {len(faces)} found, the largest is {biggest:.0f} px, "
            f"at least {min_face_size:.0f} px is needed",
        )
    key = (lambda f: f.area) if select == "largest" else (lambda f: f.score)
    chosen = max(usable, key=key)
    if len(faces) > 1:
        # Several people (or a face in a poster behind one): which one is animated is worth a warning,
        # also when the others are too small to be candidates (FaceSelection.num_faces records it too).
        log.warning(
            "%s: %d faces found%s, using the %s one",
            path,
            len(faces),
            f" ({len(usable)} large enough)" if len(usable) < len(faces) else "",
            "largest" if select == "largest" else "best",
        )
    return FaceSelection(
        face=chosen, num_faces=len(faces), num_usable=len(usable), detect_scale=scale, backend=landmarker.name
    )


def _unscale(face: DetectedFace, sx: float, sy: float, width: int, height: int) -> DetectedFace:
    """Map a face found on a copy resized by (sx, sy) back to the original (pixel-centre convention for
    points, edge convention for boxes)."""
    x1, y1, x2, y2 = face.box
    points = face.landmarks.astype(np.float64)
    points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5
    points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5
    return DetectedFace(
        box=_clamp_box((x1 / sx, y1 / sy, x2 / sx, y2 / sy), width, height),
        score=face.score,
        landmarks=points.astype(np.float32),
    )
