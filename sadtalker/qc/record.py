"""The QC record of one video: :class:`Metric` per measured figure, :class:`QCReport` for the clip.

``QCReport.to_dict()`` is the JSON contract stored as ``items/<id>/qc.json`` (``docs/qc.md``); the two
images for the report (the source face and a strip of output frames) travel beside it, not in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sadtalker.qc.thresholds import QC_PROTOCOL, Threshold

GROUPS = ("container", "frames", "face", "identity", "sharpness", "sync", "motion")


@dataclass(frozen=True)
class MetricSpec:
    """What a QC figure is: its name, group (:data:`GROUPS`), unit, and whether it only means something on
    a real face (``face``: official weights; with synthetic ones it is "not meaningful")."""

    name: str
    group: str
    unit: str
    face: bool = False


#: Every QC figure, in record and display order (the contract's groups): the one list of them.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("frames", "container", "frames"),
    MetricSpec("fps", "container", "1/s"),
    MetricSpec("width", "container", "px"),
    MetricSpec("height", "container", "px"),
    MetricSpec("codec", "container", ""),
    MetricSpec("pix_fmt", "container", ""),
    MetricSpec("has_audio", "container", ""),
    MetricSpec("av_drift_frames", "container", "frames"),
    MetricSpec("frame_count_error", "container", "frames"),
    MetricSpec("blank_fraction", "frames", "fraction"),
    MetricSpec("black_fraction", "frames", "fraction"),
    MetricSpec("washed_out_fraction", "frames", "fraction"),
    MetricSpec("longest_frozen_run", "frames", "frames"),
    MetricSpec("nonfinite_frames", "frames", "frames"),
    MetricSpec("face_presence", "face", "fraction", face=True),
    MetricSpec("face_in_region", "face", "fraction", face=True),
    MetricSpec("identity_similarity", "identity", "cosine", face=True),
    MetricSpec("sharpness_ratio", "sharpness", "ratio", face=True),
    MetricSpec("sharpness_cpbd", "sharpness", "CPBD"),
    MetricSpec("source_cpbd", "sharpness", "CPBD"),
    MetricSpec("sync_correlation", "sync", "pearson r", face=True),
    MetricSpec("sync_offset_frames", "sync", "frames", face=True),
    MetricSpec("lse_d", "sync", "distance", face=True),
    MetricSpec("lse_c", "sync", "confidence", face=True),
    MetricSpec("pose_std_deg", "motion", "deg", face=True),
    MetricSpec("beat_align", "motion", "BAS", face=True),
    MetricSpec("expression_speech_corr", "motion", "pearson r", face=True),
)
METRIC_SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}
assert {m.group for m in METRICS} <= set(GROUPS)
#: The figures a reviewer reads first: the report's items table, the Prefect table artifact and
#: ``sadtalker-batch results --qc`` show these (qc.parquet and the report's cards have every metric).
HEADLINE_METRICS: tuple[str, ...] = (
    "identity_similarity",
    "sync_correlation",
    "sync_offset_frames",
    "sharpness_ratio",
    "face_presence",
    "longest_frozen_run",
    "av_drift_frames",
)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; floats rounded to 4 decimals (readable JSON); NaN / Inf -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


@dataclass
class Metric:
    """One figure: its value, verdict, the threshold it was judged by, unit, group and a note (why it was
    skipped, why it is not meaningful, how it was measured)."""

    value: Any
    verdict: str
    threshold: Threshold | None
    unit: str
    group: str
    note: str | None = None

    def to_dict(self) -> dict:
        return {
            "value": _plain(self.value),
            "verdict": self.verdict,
            "threshold": self.threshold.to_dict() if self.threshold is not None else None,
            "unit": self.unit,
            "group": self.group,
            "note": self.note,
        }


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> JPEG bytes (OpenCV)."""
    import cv2

    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG")
    return data.tobytes()


@dataclass(eq=False)
class QCReport:
    """QC of one video.

    Attributes:
        verdict: ``pass`` / ``warn`` / ``fail``: the worst verdict of the metrics that count (``skipped``,
            ``info`` and ``not_meaningful`` never count).
        problems: one line per warn / fail metric, fails first.
        metrics: name -> :class:`Metric`, in a stable order (groups as :data:`GROUPS`).
        series: per video frame, for the report's curve: ``fps``, ``mouth_opening``, ``speech_envelope``,
            ``best_lag_frames``.
        video: facts about the file (path, frames, fps, size, codec, pix_fmt, durations, decode errors).
        models: which landmarker, face descriptor and SyncNet were used.
        seconds: wall time of the check.
        source_thumb: ``(h, w, 3)`` uint8 RGB, the source face (not in :meth:`to_dict`).
        strip: ``(96, w, 3)`` uint8 RGB, ~6 sampled output frames side by side (not in :meth:`to_dict`).
    """

    verdict: str
    problems: list[str]
    weights: str
    metrics: dict[str, Metric]
    series: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    protocol: str = QC_PROTOCOL
    source_thumb: np.ndarray | None = field(default=None, repr=False)
    strip: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """True unless the verdict is ``fail`` (a ``warn`` passes, with its problems listed)."""
        return self.verdict != "fail"

    def value(self, name: str) -> Any:
        """A metric's value (None when absent)."""
        metric = self.metrics.get(name)
        return None if metric is None else metric.value

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "verdict": self.verdict,
            "problems": list(self.problems),
            "weights": self.weights,
            "metrics": {name: metric.to_dict() for name, metric in self.metrics.items()},
            "series": {k: v if not isinstance(v, float) else _plain(v) for k, v in self.series.items()},
            "video": {k: _plain(v) for k, v in self.video.items()},
            "models": dict(self.models),
            "seconds": round(float(self.seconds), 3),
        }

    def summary(self) -> str:
        """One line: the verdict and its problems."""
        return self.verdict.upper() + (": " + "; ".join(self.problems) if self.problems else "")

    def source_jpeg(self, quality: int = 85) -> bytes | None:
        return None if self.source_thumb is None else encode_jpeg(self.source_thumb, quality)

    def strip_jpeg(self, quality: int = 85) -> bytes | None:
        return None if self.strip is None else encode_jpeg(self.strip, quality)
