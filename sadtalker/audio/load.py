"""Decode speech to 16 kHz mono float32, with typed errors for audio that cannot drive a video.

Decoding: soundfile for wav/flac/ogg/mp3; ffmpeg (float PCM at the native rate and channel count) for what
soundfile cannot read (m4a/aac, ...). Then the channels are averaged and the signal is resampled with
resampy ``kaiser_best`` (what the reference's pinned librosa 0.9.2 does; soxr would change the mel by up to
0.74, see ECOSYSTEM.md).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np

from sadtalker.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 3600.0
_MIN_SAMPLES = SAMPLE_RATE // 25  # one video frame at 25 fps
_SILENCE_PEAK = 1e-4


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data, int(sample_rate)


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    import json

    from sadtalker.video.ffmpeg import ffmpeg_exe

    ffmpeg = ffmpeg_exe()
    # Ask ffmpeg for the stream's rate/channels via a tiny ffprobe-free run: decode to f32le keeping both.
    info = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    rate, channels = _parse_audio_stream(info.stderr)
    if rate is None:
        raise AudioError(str(path), "unreadable or corrupt audio (no audio stream found)")
    proc = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise AudioError(str(path), f"unreadable or corrupt audio (ffmpeg: {json.dumps(tail[0])})")
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    return samples.reshape(-1, channels).astype(np.float32), rate


def _parse_audio_stream(stderr: str) -> tuple[int | None, int]:
    """Sample rate and channel count of the first audio stream from ``ffmpeg -i`` output."""
    import re

    for line in stderr.splitlines():
        if "Audio:" in line and "Stream #" in line:
            rate = re.search(r"(\d+) Hz", line)
            layout = line.split("Hz", 1)[1] if rate else ""
            channels = 2 if "stereo" in layout else 1
            match = re.search(r"(\d+) channels", layout)
            if match:
                channels = int(match.group(1))
            elif "5.1" in layout:
                channels = 6
            return (int(rate.group(1)) if rate else None), channels
    return None, 1


def load_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float = DEFAULT_MAX_SECONDS
) -> np.ndarray:
    """Read speech as mono float32 at ``sample_rate``.

    Returns:
        ``(L,)`` float32 samples in [-1, 1].

    Raises:
        AudioError: unreadable or corrupt, empty, shorter than one video frame, non-finite samples, or longer
            than ``max_seconds``. Silent audio is allowed (a warning is logged).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise AudioError(str(path), "empty file (0 bytes)")
    try:
        data, native_rate = _decode_soundfile(path)
    except Exception:  # soundfile cannot read this container/codec: let ffmpeg try
        data, native_rate = _decode_ffmpeg(path)
    if data.size == 0:
        raise AudioError(str(path), "no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(str(path), "non-finite samples (NaN or Inf)")
    seconds = data.shape[0] / native_rate
    if seconds > max_seconds:
        raise AudioError(str(path), f"too long: {seconds:.1f} s > the maximum of {max_seconds:.0f} s")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate:
        from sadtalker.audio.libs import librosa  # resampy fully loaded once, under a lock

        mono = librosa().resample(mono, orig_sr=native_rate, target_sr=sample_rate, res_type="kaiser_best")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if mono.shape[0] < sample_rate // 25:
        raise AudioError(
            str(path), f"too short: {seconds * 1000:.0f} ms is less than one video frame (40 ms)"
        )
    if float(np.max(np.abs(mono))) < _SILENCE_PEAK:
        log.warning("%s: the audio is silent; the mouth will barely move", path)
    return mono
