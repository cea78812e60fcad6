"""Normalised log-mel spectrogram and per-frame mel windows (Wav2Lip hparams).

Official counterparts: ``melspectrogram`` in src/utils/audio.py (hparams in src/utils/hparams.py) and the
frame count and mel-window loop of ``get_data`` in src/generate_batch.py.

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
    from sadtalker.audio.libs import librosa

    # Slaney mel scale and Slaney area normalisation (librosa defaults), 80 x 401.
    return librosa().filters.mel(sr=16_000, n_fft=N_FFT, n_mels=N_MELS, fmin=55, fmax=7600)


def mel_spectrogram(wav: np.ndarray, block_frames: int = 4096) -> np.ndarray:
    """Normalised log-mel of 16 kHz audio.

    Computed ``block_frames`` mel frames at a time (each frame only sees its own 800 samples, so blocks give
    exactly the frames of a one-shot STFT) to keep memory small and flat for long audio.

    Args:
        wav: ``(L,)`` float samples.

    Returns:
        ``(1 + L // 200, 80)`` float32 in [-4, 4] (frames x bands).
    """
    from scipy.signal import lfilter

    from sadtalker.audio.libs import librosa

    lib = librosa()  # imported once per process under a lock (lazy modules are not thread-safe)

    emphasised = lfilter([1.0, -0.97], [1.0], np.asarray(wav, dtype=np.float64))
    # centre=True with zero padding, done once here so that every block is a plain (uncentred) STFT
    padded = np.pad(emphasised, (N_FFT // 2, N_FFT // 2))
    total = 1 + len(emphasised) // HOP
    out = np.empty((total, N_MELS), dtype=np.float32)
    for first in range(0, total, block_frames):
        last = min(total, first + block_frames)
        segment = padded[first * HOP : (last - 1) * HOP + N_FFT]
        spectrum = lib.stft(y=segment, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, center=False)
        mel = _mel_basis() @ np.abs(spectrum)
        db = 20.0 * np.log10(np.maximum(1e-5, mel)) - _REF_LEVEL_DB
        normalised = (2 * _MAX_ABS) * ((db - _MIN_LEVEL_DB) / -_MIN_LEVEL_DB) - _MAX_ABS
        out[first:last] = np.clip(normalised, -_MAX_ABS, _MAX_ABS).T
    return out


def mel_window_indices(frames: int | np.ndarray, mel_frames: int) -> np.ndarray:
    """Mel rows of each video frame's window: ``trunc(80 (i - 2) / 25) + 0..15``, clamped to the mel.

    Args:
        frames: T (all frames) or the frame numbers ``(n,)``.

    Returns:
        ``(n, 16)`` int64.
    """
    numbers = np.arange(frames) if np.ndim(frames) == 0 else np.asarray(frames)
    starts = np.trunc(_MEL_FPS * (numbers - 2) / FPS).astype(np.int64)
    return np.clip(starts[:, None] + np.arange(WINDOW_STEPS)[None, :], 0, mel_frames - 1)


class MelWindows:
    """The per-frame mel windows of a clip, built on demand for a slice of frames.

    Behaves like the ``(T, 80, 16)`` array of :func:`mel_windows` for ``shape``, ``len`` and slicing, without
    holding all T windows (77 MB for ten minutes of speech) at once.
    """

    def __init__(self, mel: np.ndarray, frames: int):
        self.mel = mel
        self.frames = frames
        self.shape = (frames, N_MELS, WINDOW_STEPS)

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, item: slice) -> np.ndarray:
        """``(n, 80, 16)`` float32 windows of the frames ``range(T)[item]``."""
        if not isinstance(item, slice):
            raise TypeError("MelWindows supports slices only")
        index = mel_window_indices(np.arange(self.frames)[item], self.mel.shape[0])
        return np.ascontiguousarray(self.mel[index].transpose(0, 2, 1), dtype=np.float32)


def mel_windows(mel: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame mel windows.

    Args:
        mel: ``(M, 80)`` from :func:`mel_spectrogram`.
        frames: T, the number of video frames.

    Returns:
        ``(T, 80, 16)`` float32 (mel bins x time in window).
    """
    return MelWindows(mel, frames)[:]
