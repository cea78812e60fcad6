"""The records the model's stages hand each other (the design's data flow), in memory and as small files.

    FaceRecord     photo -> crop + 3DMM row               (sadtalker.pipeline.extract_face)
    Coefficients   speech + face -> (T, 70) motion        (sadtalker.pipeline.audio_to_coefficients)
    VideoRecord    face + coefficients -> a written mp4   (sadtalker.pipeline.render_video)

``FaceRecord`` and ``Coefficients`` save to / load from an ``.npz`` (arrays + JSON ``meta``), which is what
the batch caches by content hash; the batch's own records of where those files are, and what each stage
cost, are ``tasks.records`` (``StoredFace``, ``StoredCoeffs``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sadtalker.atomic import atomic_path

if TYPE_CHECKING:
    from sadtalker.face.crop import CropRecord


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` + JSON ``meta`` to ``path`` atomically (:func:`sadtalker.atomic.atomic_path`): a
    reader never sees half a file, also when threads or processes write the same content-addressed path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the JSON ``meta`` of a file :func:`save_npz` wrote."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files if key != "meta"}
        meta = json.loads(bytes(data["meta"]).decode())
    return arrays, meta


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """A photo prepared for animation.

    Attributes:
        source_image: ``(S, S, 3)`` uint8 RGB, the renderer's source.
        coeff_3dmm: ``(1, 73)`` float32: expression 64, angles 3, translation 3, crop scale + translation 3.
        full_coeff: ``(1, 257)`` float32 3DMM regressor output.
        landmarks: ``(68, 2)`` float32 stage-A landmarks in original-photo pixels (None in resize mode).
        crop: the crop record (JSON-able dict of :class:`sadtalker.face.crop.CropRecord`).
        num_faces: faces the detector found in the photo.
        backend: the landmark backend used.
    """

    source_image: np.ndarray
    coeff_3dmm: np.ndarray
    full_coeff: np.ndarray
    landmarks: np.ndarray | None
    crop: dict
    num_faces: int
    backend: str

    def crop_record(self) -> CropRecord:
        from sadtalker.face.crop import CropRecord

        return CropRecord.from_dict(self.crop)

    def save(self, path: str | Path) -> None:
        arrays = {
            "source_image": self.source_image,
            "coeff_3dmm": self.coeff_3dmm,
            "full_coeff": self.full_coeff,
        }
        if self.landmarks is not None:
            arrays["landmarks"] = self.landmarks
        save_npz(path, arrays, {"crop": self.crop, "num_faces": self.num_faces, "backend": self.backend})

    @classmethod
    def load(cls, path: str | Path) -> FaceRecord:
        arrays, meta = load_npz(path)
        return cls(
            source_image=arrays["source_image"],
            coeff_3dmm=arrays["coeff_3dmm"],
            full_coeff=arrays["full_coeff"],
            landmarks=arrays.get("landmarks"),
            crop=meta["crop"],
            num_faces=int(meta["num_faces"]),
            backend=str(meta["backend"]),
        )


@dataclass(frozen=True, eq=False)
class Coefficients:
    """Motion coefficients of one clip.

    Attributes:
        coefficients: ``(T, 70)`` float32: expression (64) | head pose (6).
        num_frames: T (25 fps).
        audio_seconds: duration of the decoded speech.
        blink: ``(T, 1)`` the blink curve used.
    """

    coefficients: np.ndarray
    num_frames: int
    audio_seconds: float
    blink: np.ndarray

    def save(self, path: str | Path) -> None:
        save_npz(
            path,
            {"coefficients": self.coefficients, "blink": self.blink},
            {"num_frames": self.num_frames, "audio_seconds": self.audio_seconds},
        )

    @classmethod
    def load(cls, path: str | Path) -> Coefficients:
        arrays, meta = load_npz(path)
        return cls(
            arrays["coefficients"], int(meta["num_frames"]), float(meta["audio_seconds"]), arrays["blink"]
        )


@dataclass(frozen=True)
class VideoRecord:
    """A written clip.

    Attributes:
        path: the mp4.
        num_frames: T; ``duration`` = T / 25 s (the audio is cut to the video).
        width, height: the file's frame size (even; odd render sizes are padded by one pixel).
        synthetic_weights: rendered with synthetic weights (not a face).
        seconds_per_frame: the renderer's own time per frame.
        frame_stats: :class:`sadtalker.qc.FrameStats` ``.to_dict()`` gathered while rendering (non-finite
            float frames, blank frames, brightness, motion); feed it to ``check_video(upstream=...)``.
        qc: the full QC record (``QCReport.to_dict()``) when the caller ran ``check_video`` on the file:
            :func:`sadtalker.pipeline.render_pair` does; :func:`sadtalker.pipeline.render_video` leaves it
            None (the batch's QC is its own stage).
    """

    path: str
    num_frames: int
    duration: float
    width: int
    height: int
    synthetic_weights: bool
    seconds_per_frame: float
    qc: dict | None = None
    frame_stats: dict | None = None
