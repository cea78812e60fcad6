"""Audio loading, mel features, windows and the blink curve."""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from sadtalker.audio import (
    SAMPLE_RATE,
    crop_to_frames,
    load_audio,
    mel_spectrogram,
    mel_windows,
    num_frames,
    random_blink_curve,
)
from sadtalker.audio.mel import MelWindows, mel_window_indices
from sadtalker.errors import AudioError


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_soundfile_formats_decode_to_16k_mono(tmp_path, ext):
    path = tmp_path / f"speech.{ext}"
    soundfile.write(path, tone(1.0, 16000), 16000)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - SAMPLE_RATE) <= 1
    assert np.abs(wav - tone(1.0, 16000)[: len(wav)]).max() < 0.05


@pytest.mark.parametrize("ext, codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_ffmpeg_formats_decode(tmp_path, ext, codec):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs an ffmpeg binary on PATH to make the compressed file")
    src = tmp_path / "src.wav"
    soundfile.write(src, tone(1.0, 44100, channels=2), 44100)
    out = tmp_path / f"speech.{ext}"
    made = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(src), "-c:a", codec, str(out)], check=False)
    if made.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode {codec}")
    wav = load_audio(out)
    assert abs(len(wav) / SAMPLE_RATE - 1.0) < 0.1  # codec priming may add a few ms
    assert 0.1 < np.abs(wav).max() < 0.5


def test_stereo_is_averaged_and_resampled(tmp_path):
    stereo = np.stack([tone(0.5, 48000)[:], np.zeros(24000, np.float32)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 48000, subtype="FLOAT")
    wav = load_audio(path)
    assert len(wav) == 8000
    assert 0.13 < np.abs(wav).max() < 0.17  # half of the 0.3 tone


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "unreadable"),
        (lambda p: soundfile.write(p, tone(0.02, 16000), 16000), "too short"),
        (lambda p: soundfile.write(p, np.full(800, np.nan, "f4"), 16000, subtype="FLOAT"), "non-finite"),
    ],
    ids=["empty", "corrupt", "shorter-than-a-frame", "nan"],
)
def test_bad_audio_raises_typed_error_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=problem) as info:
        load_audio(path)
    assert info.value.path == str(path)


def test_typed_errors_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(AudioError("a.wav", "too short")))
    assert isinstance(error, AudioError) and error.path == "a.wav" and str(error) == "a.wav: too short"


def test_too_long_audio_is_refused(tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, tone(2.0, 16000), 16000)
    with pytest.raises(AudioError, match="too long"):
        load_audio(path, max_seconds=1.5)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_silence_is_allowed_with_a_warning(tmp_path, caplog):
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros(16000, np.float32), 16000)
    with caplog.at_level(logging.WARNING):
        wav = load_audio(path)
    assert len(wav) == 16000
    assert "silent" in caplog.text


def test_frame_count_and_crop():
    assert num_frames(639) == 0 and num_frames(640) == 1 and num_frames(32000) == 50
    cropped, frames = crop_to_frames(np.zeros(1000, np.float32))
    assert frames == 1 and len(cropped) == 640


def test_mel_shape_and_range():
    wav = tone(1.0, 16000)
    mel = mel_spectrogram(wav)
    assert mel.shape == (1 + 16000 // 200, 80)
    assert mel.dtype == np.float32
    assert mel.min() >= -4 and mel.max() <= 4
    assert mel[:, 2:6].mean() > mel[:, 60:].mean()  # the 220 Hz tone sits in the low bands


def test_mel_windows_clamp_at_both_ends():
    index = mel_window_indices(frames=50, mel_frames=161)
    assert index.shape == (50, 16)
    assert list(index[0][:7]) == [0] * 7 and index[0][7] == 1  # start -6, clamped to 0
    assert index[1][0] == 0 and index[1][3] == 0 and index[1][4] == 1  # start -3
    assert index[-1].max() == 160
    mel = np.arange(161 * 80, dtype=np.float32).reshape(161, 80)
    windows = mel_windows(mel, 50)
    assert windows.shape == (50, 80, 16)
    np.testing.assert_array_equal(windows[10], mel[index[10]].T)


def test_blockwise_mel_equals_one_block():
    wav = np.random.default_rng(0).normal(scale=0.1, size=16000 * 3 + 123).astype(np.float32)
    one_block = mel_spectrogram(wav, block_frames=10**6)
    np.testing.assert_array_equal(mel_spectrogram(wav, block_frames=7), one_block)


def test_lazy_windows_equal_the_full_array():
    mel = np.random.default_rng(1).normal(size=(97, 80)).astype(np.float32)
    lazy = MelWindows(mel, 30)
    assert lazy.shape == (30, 80, 16) and len(lazy) == 30
    full = mel_windows(mel, 30)
    np.testing.assert_array_equal(lazy[5:17], full[5:17])
    np.testing.assert_array_equal(lazy[-4:], full[-4:])


def test_blink_curve_is_seeded_and_well_formed():
    a = random_blink_curve(200, np.random.default_rng(7))
    b = random_blink_curve(200, np.random.default_rng(7))
    c = random_blink_curve(200, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (200, 1) and a.dtype == np.float32
    assert set(np.unique(a).tolist()) <= {float(np.float32(v)) for v in (0.0, 0.5, 0.9, 1.0)}
    assert (a == 1.0).sum() >= 2


@pytest.mark.parametrize("frames", [1, 20, 21, 22])
def test_blink_curve_short_clips(frames):
    curve = random_blink_curve(frames, np.random.default_rng(0))  # T = 21 crashes the reference
    assert curve.shape == (frames, 1)
    if frames <= 21:
        assert not curve.any()


@pytest.mark.shared
def test_resampling_matches_reference_golden(golden_dir):
    wav = load_audio(golden_dir / "input_audio.wav")  # 48 kHz stereo
    expected = np.load(golden_dir / "a_mel.npz")["wav16k"]
    np.testing.assert_allclose(wav, expected, atol=1e-6)
