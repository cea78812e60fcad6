"""The small records tasks exchange: storage URIs, hashes, counts and timings (never frame arrays).

Each stage record also says which columns of the batch's ``results.parquet`` it fills (``result_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sadtalker.paths import BatchPaths

__all__ = ["CoeffRecord", "FaceRecord", "QCRecord", "RenderRecord", "StageContext"]


@dataclass(frozen=True)
class StageContext:
    """What every stage of a batch needs besides its row.

    ``device``: ``"auto"`` (CUDA when the worker has it), ``"cpu"``, ``"cuda"``, ``"cuda:1"``;
    resolved on the worker that runs the task. ``force``: recompute even when the artefact exists.
    ``progress``: per-clip progress bars (render).
    """

    paths: BatchPaths
    device: str = "auto"
    dtype: str = "float32"
    force: bool = False
    progress: bool = False


@dataclass(frozen=True)
class FaceRecord:
    """Photo -> crop + 3DMM: ``cache_uri`` is content-addressed, ``uri`` the row's copy."""

    row_id: str
    image_sha256: str
    key: str
    cache_uri: str
    uri: str
    num_faces: int
    reused: bool
    seconds: float

    def result_fields(self) -> dict[str, Any]:
        return {
            "image_sha256": self.image_sha256,
            "face_key": self.key,
            "face_uri": self.uri,
            "num_faces": self.num_faces,
            "face_reused": self.reused,
            "face_s": self.seconds,
        }


@dataclass(frozen=True)
class CoeffRecord:
    """Audio (+ face) -> (T, 70) coefficients."""

    row_id: str
    audio_sha256: str
    key: str
    cache_uri: str
    uri: str
    num_frames: int
    audio_seconds: float
    reused: bool
    seconds: float

    def result_fields(self) -> dict[str, Any]:
        return {
            "audio_sha256": self.audio_sha256,
            "coeffs_key": self.key,
            "coeffs_uri": self.uri,
            "audio_seconds": self.audio_seconds,
            "coeffs_reused": self.reused,
            "coeffs_s": self.seconds,
        }


@dataclass(frozen=True)
class RenderRecord:
    """The row's video. ``seconds``: the task's wall time (on CPU it includes waiting for the process's
    renderer, which renders one clip at a time); ``wait_seconds``: time spent waiting for the GPU slot (0 on
    CPU); ``seconds_per_frame``: the renderer's own time per frame. ``qc``: the renderer's report on the
    written file (``sadtalker.qc.QCReport.to_dict()``), when it made one."""

    row_id: str
    key: str
    video_uri: str
    record_uri: str
    num_frames: int
    duration: float
    width: int
    height: int
    synthetic_weights: bool
    device: str
    reused: bool
    seconds: float
    wait_seconds: float
    seconds_per_frame: float | None = None
    qc: dict[str, Any] | None = None

    def result_fields(self) -> dict[str, Any]:
        return {
            "render_key": self.key,
            "video_uri": self.video_uri,
            "num_frames": self.num_frames,
            "duration_s": self.duration,
            "width": self.width,
            "height": self.height,
            "synthetic_weights": self.synthetic_weights,
            "device": self.device,
            "render_reused": self.reused,
            "render_s": self.seconds,
            "render_wait_s": self.wait_seconds,
            "seconds_per_frame": self.seconds_per_frame,
        }


@dataclass(frozen=True)
class QCRecord:
    """Checks on the written video: ``status`` is ``ok`` or ``warn`` (``checks`` says why)."""

    row_id: str
    uri: str
    status: str
    num_frames: int
    duration: float
    audio_seconds: float
    video_bytes: int
    checks: tuple[str, ...]
    seconds: float

    def result_fields(self) -> dict[str, Any]:
        return {
            "qc_uri": self.uri,
            "qc_status": self.status,
            "qc_checks": "; ".join(self.checks),
            "video_bytes": self.video_bytes,
            "qc_s": self.seconds,
        }
