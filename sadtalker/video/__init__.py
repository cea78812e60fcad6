"""Rendered frames → the delivered file: uint8 conversion and resize (SPEC §6.10), paste-back into the photo
(§7.4), streaming H.264 + AAC encoding with atomic rename (§7.1–7.3), and probing of written files."""

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
