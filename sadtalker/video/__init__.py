"""Rendered frames → the delivered file: uint8 conversion and resize, paste-back into the photo, streaming
H.264 + AAC encoding with atomic rename, and probing of written files. Official counterparts:
``AnimateFromCoeff.generate`` (src/facerender/animate.py), ``paste_pic`` (src/utils/paste_pic.py) and
``save_video_with_watermark`` (src/utils/videoio.py)."""

from sadtalker.video.encode import VideoWriter, remove_stale_temps
from sadtalker.video.ffmpeg import FFmpegError, MediaInfo, ffmpeg_exe, ffprobe_exe, probe
from sadtalker.video.paste import PasteBack, clamp_box, paste_frame
from sadtalker.video.postprocess import (
    FrameEnhancer,
    chw_to_hwc,
    output_size,
    postprocess,
    resize_frames,
    to_uint8,
)

__all__ = [
    "FFmpegError",
    "FrameEnhancer",
    "MediaInfo",
    "PasteBack",
    "VideoWriter",
    "chw_to_hwc",
    "clamp_box",
    "ffmpeg_exe",
    "ffprobe_exe",
    "output_size",
    "paste_frame",
    "postprocess",
    "probe",
    "remove_stale_temps",
    "resize_frames",
    "to_uint8",
]
