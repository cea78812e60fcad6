"""Decode speech to 16 kHz mono float32, with typed errors for audio that cannot drive a video.

Decoding: soundfile for wav/flac/ogg/mp3; ffmpeg (float PCM at the native rate and channel count) for what
soundfile cannot read (m4a/aac, ...). Then the channels are averaged and the signal is resampled with
resampy ``kaiser_best`` (what the official ``load_wav`` in src/utils/audio.py does with its pinned librosa
0.9.2; soxr would change the mel by up to 0.74).

Length: at most :func:`max_audio_seconds` (one hour, or ``$SADTALKER_MAX_AUDIO_SECONDS``). A file that
says in its header that it is longer is refused before any sample is decoded; ffmpeg stops decoding one
second past the maximum. So memory is bounded by the maximum, not by the file.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from sadtalker.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 3600.0
#: Environment variable overriding :data:`DEFAULT_MAX_SECONDS` (seconds, > 0) for a worker.
MAX_SECONDS_ENV = "SADTALKER_MAX_AUDIO_SECONDS"
_MIN_SAMPLES = SAMPLE_RATE // 25  # one video frame at 25 fps
_SILENCE_PEAK = 1e-4


def max_audio_seconds() -> float:
    """The longest speech accepted: ``$SADTALKER_MAX_AUDIO_SECONDS`` when set, else one hour.

    Raises:
        ValueError: the variable is set to something that is not a positive number of seconds.
    """
    raw = os.environ.get(MAX_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"${MAX_SECONDS_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def _too_long(path: Path, seconds: float | None, max_seconds: float) -> AudioError:
    length = f"{seconds:.1f} s >" if seconds is not None else "more than"
    return AudioError(str(path), f"too long: {length} the maximum of {max_seconds:g} s ({MAX_SECONDS_ENV})")


def _decode_soundfile(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode with libsndfile. The length in the header is checked before decoding, and a WAV file must
    hold the samples its header declares (AudioError otherwise). Other failures: libsndfile's own errors
    (the caller then tries ffmpeg)."""
    import soundfile

    with soundfile.SoundFile(str(path)) as f:
        rate = int(f.samplerate)
        if f.frames > max_seconds * rate:
            raise _too_long(path, f.frames / rate, max_seconds)
        if f.format in ("WAV", "WAVEX"):
            _check_wav_complete(path)
        data = f.read(dtype="float32", always_2d=True)
    return data, rate


#: ``data`` chunk sizes that mean "length unknown" (a WAV streamed to a pipe cannot seek back to fill it in).
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def _check_wav_complete(path: Path) -> None:
    """Raise :class:`AudioError` when the WAV file at ``path`` holds at least one video frame (40 ms) less
    audio than its ``data`` chunk declares: a cut upload or copy, which libsndfile reads without complaint
    as far as it goes (the video would silently stop halfway through the speech)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # RF64 / W64 and others: libsndfile's own checks only
    byte_rate, pos = 0, 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 16 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        elif chunk == b"data":
            present = size - (pos + 8)
            if byte_rate and length not in _WAV_UNKNOWN_SIZES and (length - present) / byte_rate >= 0.04:
                raise AudioError(
                    str(path),
                    f"truncated: the header declares {length / byte_rate:.2f} s, the file holds "
                    f"{max(present, 0) / byte_rate:.2f} s (an incomplete upload or copy?)",
                )
            return
        pos += 8 + length + (length & 1)


def _decode_ffmpeg(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with ffmpeg, at its own rate and channel count, both read from the
    header of the float WAV that ffmpeg writes (exact for any channel layout, unlike a parse of the layout's
    name in ffmpeg's log). Decoding stops one second past ``max_seconds``."""
    import json

    import ffmpeg as ffmpeg_python

    # Time-limited by the running stage's deadline; a hung ffmpeg is killed with its process group.
    from sadtalker.video.ffmpeg import run_ffmpeg

    audio = ffmpeg_python.input(str(path), t=f"{max_seconds + 1:.3f}")["a:0"]
    wav = audio.output("pipe:", format="wav", acodec="pcm_f32le")
    proc = run_ffmpeg(wav, f"decoding {path.name}", check=False)
    if proc.returncode != 0:
        error = proc.stderr.decode(errors="replace").strip()
        if "matches no streams" in error:
            raise AudioError(str(path), "no audio stream (a video without sound, or not an audio file)")
        tail = error.splitlines()[-1:] or [""]
        raise AudioError(str(path), f"unreadable or corrupt audio (ffmpeg: {json.dumps(tail[0])})")
    data, rate = _parse_float_wav(proc.stdout, path)
    if data.shape[0] > max_seconds * rate:
        raise _too_long(path, None, max_seconds)
    return data, rate


def _parse_float_wav(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 samples and the rate of a ``pcm_f32le`` WAV written by ffmpeg to a pipe
    (whose chunk sizes are placeholders: the samples run to the end of the bytes)."""
    channels = rate = 0
    pos = 12 if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else len(data)
    while pos + 8 <= len(data):
        chunk, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
        elif chunk == b"data" and channels and rate:
            count = (len(data) - pos - 8) // (4 * channels) * channels
            samples = np.frombuffer(data, dtype="<f4", count=count, offset=pos + 8)
            return samples.reshape(-1, channels).astype(np.float32), rate
        pos += 8 + length + (length & 1)
    raise AudioError(str(path), "unreadable or corrupt audio (ffmpeg gave no samples)")


def load_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Read speech as mono float32 at ``sample_rate``.

    Args:
        max_seconds: the longest accepted; None: :func:`max_audio_seconds` (one hour, or
            ``$SADTALKER_MAX_AUDIO_SECONDS``).

    Returns:
        ``(L,)`` float32 samples in [-1, 1].

    Raises:
        AudioError: unreadable or corrupt, truncated (WAV), empty, shorter than one video frame, non-finite
            samples, or longer than the maximum. Silent audio is allowed (a warning is logged).
    """
    path = Path(path)
    limit = max_audio_seconds() if max_seconds is None else float(max_seconds)
    if not path.is_file():
        raise AudioError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise AudioError(str(path), "empty file (0 bytes)")
    try:
        data, native_rate = _decode_soundfile(path, limit)
    except AudioError:
        raise
    except Exception:  # soundfile cannot read this container/codec: let ffmpeg try
        data, native_rate = _decode_ffmpeg(path, limit)
    if data.size == 0:
        raise AudioError(str(path), "no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(str(path), "non-finite samples (NaN or Inf)")
    seconds = data.shape[0] / native_rate
    if seconds > limit:
        raise _too_long(path, seconds, limit)
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
