"""The small records the stage tasks return: where a stage's artefact is stored (URIs, keys, hashes), its
counts and timings, never arrays. ``StoredFace`` and ``StoredCoeffs`` point at a stored
``sadtalker.records.FaceRecord`` / ``Coefficients`` (the model's records, which the next stage loads);
``StoredRender`` at the row's video, ``StoredQC`` at its QC record.

Each stage record also says which columns of the batch's ``results.parquet`` it fills (``result_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sadtalker.paths import BatchPaths
from sadtalker.timeouts import StageTimeouts

__all__ = ["StageContext", "StoredCoeffs", "StoredFace", "StoredQC", "StoredRender"]


@dataclass(frozen=True)
class StageContext:
    """What every stage of a batch needs besides its row.

    ``device``: ``"auto"`` (CUDA when the worker has it), ``"cpu"``, ``"cuda"``, ``"cuda:1"``;
    resolved on the worker that runs the task. ``compile``: render through ``torch.compile``.
    ``force``: recompute even when the artefact exists.
    ``progress``: per-clip progress bars (render). ``qc_thresholds``: the batch's overrides of the QC
    thresholds (``{"identity_similarity": {"fail": 0.5}}``; ``sadtalker.qc`` has the defaults).
    ``weights``: the weights policy (``official`` | ``synthetic`` | ``auto``), resolved by the flow before
    any row work so that every worker loads its networks under the same rule. ``timeouts``: each stage's
    time limit (``sadtalker.timeouts.StageTimeouts``; the render's scales with the row's frames).
    ``allowed_prefixes``: where the rows' input files may lie (the validation report's resolved
    ``allowed_prefixes``); the stages check each local file again as they open it
    (``sadtalker.inputs.InputFiles``), so a file swapped for a symlink out of them after validation is
    refused. Empty or ``("*",)``: no check.
    """

    paths: BatchPaths
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    force: bool = False
    progress: bool = False
    qc_thresholds: dict[str, dict[str, float]] | None = None
    weights: str | None = None
    timeouts: StageTimeouts = StageTimeouts()
    allowed_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredFace:
    """Photo -> crop + 3DMM: ``cache_uri`` is content-addressed, ``uri`` the row's copy.
    ``landmark_backend`` / ``landmark_weights``: the landmarker that found the face (``face-alignment`` or
    ``dlib``) and the SHA-256 over its files, both part of the face key (``Models.landmarker_identity``)."""

    row_id: str
    image_sha256: str
    key: str
    cache_uri: str
    uri: str
    num_faces: int
    reused: bool
    seconds: float
    landmark_backend: str | None = None
    landmark_weights: str | None = None

    def result_fields(self) -> dict[str, Any]:
        return {
            "image_sha256": self.image_sha256,
            "face_key": self.key,
            "face_uri": self.uri,
            "num_faces": self.num_faces,
            "landmark_backend": self.landmark_backend,
            "face_reused": self.reused,
            "face_s": self.seconds,
        }


@dataclass(frozen=True)
class StoredCoeffs:
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
class StoredRender:
    """The row's video. ``seconds``: the task's wall time (on CPU it includes waiting for the process's
    renderer, which renders one clip at a time); ``wait_seconds``: time spent waiting for the GPU slot (0 on
    CPU); ``seconds_per_frame``: the renderer's own time per frame. ``frame_stats``: what the renderer saw
    while frames streamed past (``sadtalker.qc.FrameStats``: non-finite values before the uint8 conversion,
    which the file cannot show), handed to QC."""

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
    frame_stats: dict[str, Any] | None = None
    weights_label: str | None = None
    compiled: bool = False

    def result_fields(self) -> dict[str, Any]:
        return {
            "render_key": self.key,
            "video_uri": self.video_uri,
            "num_frames": self.num_frames,
            "duration_s": self.duration,
            "width": self.width,
            "height": self.height,
            "synthetic_weights": self.synthetic_weights,
            "weights": self.weights_label,
            "device": self.device,
            "compiled": self.compiled,
            "render_reused": self.reused,
            "render_s": self.seconds,
            "render_wait_s": self.wait_seconds,
            "seconds_per_frame": self.seconds_per_frame,
        }


@dataclass(frozen=True)
class StoredQC:
    """QC of the stored video: ``verdict`` pass, warn or fail (``problems`` says why, worst first);
    ``metrics``: every figure and its verdict, flat (``name``, ``name__verdict``), for ``qc.parquet``."""

    row_id: str
    uri: str
    verdict: str
    problems: tuple[str, ...]
    protocol: str
    video_bytes: int
    reused: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def result_fields(self) -> dict[str, Any]:
        return {
            "qc_uri": self.uri,
            "qc_verdict": self.verdict,
            "qc_problems": "; ".join(self.problems),
            "qc_protocol": self.protocol,
            "video_bytes": self.video_bytes,
            "qc_reused": self.reused,
            "qc_s": self.seconds,
        }
