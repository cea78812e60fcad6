"""Audio -> 16 kHz mono -> normalised log-mel -> per-frame 16-step windows, and the blink curve (the
official ``get_data`` in src/generate_batch.py)."""

from sadtalker.audio.blink import random_blink_curve
from sadtalker.audio.load import SAMPLE_RATE, load_audio
from sadtalker.audio.mel import (
    FPS,
    SAMPLES_PER_FRAME,
    crop_to_frames,
    mel_spectrogram,
    mel_windows,
    num_frames,
)

__all__ = [
    "FPS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "crop_to_frames",
    "load_audio",
    "mel_spectrogram",
    "mel_windows",
    "num_frames",
    "random_blink_curve",
]
