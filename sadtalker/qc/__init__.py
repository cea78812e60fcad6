"""Quality control of a rendered clip: streaming frame statistics and checks on the written file."""

from sadtalker.qc.metrics import FrameStats, QCReport, check_video

__all__ = ["FrameStats", "QCReport", "check_video"]
