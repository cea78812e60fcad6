"""Normalised log-mel spectrogram and per-frame mel windows (SPEC §3.1–§3.3, Wav2Lip hparams).

Pure functions over numpy arrays.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

FPS = 25
SAMPLES_PER_FRAME = 16_000 // FPS  # 640
N_FFT = 800
HOP = 200
N_MELS = 80
WINDOW_STEPS = 16  # mel frames per video frame window (0.2 s)
_MEL_FPS = 80  # 16000 / HOP
_MIN_LEVEL_DB = -100.0
_REF_LEVEL_DB = 20.0
_MAX_ABS = 4.0


def num_frames(num_samples: int) -> int:
    """Video frames in ``num_samples`` of 16 kHz audio: ``floor(L / 640)`` (a partial frame is dropped)."""
    return num_samples // SAMPLES_PER_FRAME


def crop_to_frames(wav: np.ndarray) -> tuple[np.ndarray, int]:
    """Cut ``wav`` (L,) to ``T * 640`` samples. Returns the cropped wav and T."""
    frames = num_frames(len(wav))
    return wav[: frames * SAMPLES_PER_FRAME], frames


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    # Slaney mel scale and Slaney area normalisation (librosa defaults), 80 x 401.
    return librosa.filters.mel(sr=16_000, n_fft=N_FFT, n_mels=N_MELS, fmin=55, fmax=7600)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Normalised log-mel of 16 kHz audio.

    Args:
        wav: ``(L,)`` float samples.

    Returns:
        ``(1 + L // 200, 80)`` float32 in [-4, 4] (frames x bands).
    """
    import librosa
    from scipy.signal import lfilter

    emphasised = lfilter([1.0, -0.97], [1.0], np.asarray(wav, dtype=np.float64))
    spectrum = librosa.stft(
        y=emphasised, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, center=True, pad_mode="constant"
    )
    mel = _mel_basis() @ np.abs(spectrum)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - _REF_LEVEL_DB
    normalised = (2 * _MAX_ABS) * ((db - _MIN_LEVEL_DB) / -_MIN_LEVEL_DB) - _MAX_ABS
    return np.clip(normalised, -_MAX_ABS, _MAX_ABS).T.astype(np.float32)


def mel_window_indices(frames: int, mel_frames: int) -> np.ndarray:
    """Mel rows of each video frame's window: ``trunc(80 (i - 2) / 25) + 0..15``, clamped. ``(T, 16)`` int."""
    starts = np.trunc(_MEL_FPS * (np.arange(frames) - 2) / FPS).astype(np.int64)
    return np.clip(starts[:, None] + np.arange(WINDOW_STEPS)[None, :], 0, mel_frames - 1)


def mel_windows(mel: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame mel windows.

    Args:
        mel: ``(M, 80)`` from :func:`mel_spectrogram`.
        frames: T, the number of video frames.

    Returns:
        ``(T, 80, 16)`` float32 (mel bins x time in window).
    """
    index = mel_window_indices(frames, mel.shape[0])
    return np.ascontiguousarray(mel[index].transpose(0, 2, 1), dtype=np.float32)
