"""Quality control of rendered clips (protocol :data:`QC_PROTOCOL`, metrics and thresholds in docs/qc.md).

- :func:`check_video`: every metric of a written video, decoded back (container, frames, face presence and
  region, identity, sharpness, lip sync, motion) with pass / warn / fail verdicts -> :class:`QCReport`.
- :class:`FrameStats`: cheap statistics gathered while frames stream out of the renderer (non-finite values
  before the uint8 conversion, blank frames).
- :data:`DEFAULT_THRESHOLDS`, :func:`parse_threshold_overrides`: the limits and their per-batch overrides.

Modules: ``thresholds`` (limits, protocol), ``decode`` (frames / audio back from the file), ``frames``,
``face`` (dlib models, identity), ``sharpness`` (CPBD), ``sync`` (mouth opening vs speech), ``motion``
(from coefficients), ``record`` (the record), ``check`` (the orchestration); ``syncnet`` (LSE-D / LSE-C)
and ``report`` (the batch HTML report) are used when present.
"""

from sadtalker.qc.check import check_video
from sadtalker.qc.frames import FrameStats
from sadtalker.qc.record import Metric, QCReport, encode_jpeg
from sadtalker.qc.thresholds import (
    DEFAULT_THRESHOLDS,
    QC_PROTOCOL,
    Threshold,
    parse_threshold_overrides,
    resolve_thresholds,
    thresholds_to_dict,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "QC_PROTOCOL",
    "FrameStats",
    "Metric",
    "QCReport",
    "Threshold",
    "check_video",
    "encode_jpeg",
    "parse_threshold_overrides",
    "resolve_thresholds",
    "thresholds_to_dict",
]
