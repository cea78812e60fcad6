"""Rendered frames → the delivered file: resize to the output size, paste-back into the photo, streaming
H.264 + AAC encoding with atomic rename, and probing of written files. Official counterparts:
``AnimateFromCoeff.generate`` (src/facerender/animate.py), ``paste_pic`` (src/utils/paste_pic.py) and
``save_video_with_watermark`` (src/utils/videoio.py)."""

from sadtalker.video.encode import VideoWriter, remove_stale_temps
from sadtalker.video.ffmpeg import FFmpegError, MediaInfo, ffmpeg_exe, ffprobe_exe, probe
from sadtalker.video.paste import PasteBack, clamp_box, paste_frame
from sadtalker.video.postprocess import FrameEnhancer, output_size, resize_frames

__all__ = [
    "FFmpegError",
    "FrameEnhancer",
    "MediaInfo",
    "PasteBack",
    "VideoWriter",
    "clamp_box",
    "ffmpeg_exe",
    "ffprobe_exe",
    "output_size",
    "paste_frame",
    "probe",
    "remove_stale_temps",
    "resize_frames",
]
