"""Issue 11, speech: every bad or unusual speech file ends in an AudioError naming the file, a warning, or
16 kHz mono samples that match what was recorded.

Through :func:`sadtalker.audio.load_audio` (what ``audio_to_coefficients`` and QC call first), and through
``audio_to_coefficients`` itself where the outcome is "runs" (silence) or the configured maximum. Media are
made here from tests/data/speech.wav (1.176 s, 16 kHz).
"""

from __future__ import annotations

import logging
import subprocess
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sadtalker.audio import load_audio
from sadtalker.errors import AudioError
from sadtalker.options import RenderOptions

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech.wav"
SECONDS = 1.17625  # 18 820 samples


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    data, rate = soundfile.read(SPEECH, dtype="float32")
    assert rate == 16_000 and data.ndim == 1
    return data


@pytest.fixture(scope="module")
def face(models):
    """The test portrait's face, with the audio networks and the resampler loaded (first use paid here)."""
    from sadtalker.audio.libs import librosa
    from sadtalker.pipeline import extract_face

    models.audio_networks(256)
    librosa()
    return extract_face(SPEECH.parent / "portrait.png", RenderOptions(), models)


def _ffmpeg(*args: str) -> None:
    from sadtalker.video.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=60)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` (16 kHz) at ``rate`` by linear interpolation: enough for a test signal, no codec involved."""
    n = round(len(x) * rate / 16_000)
    return np.interp(np.arange(n) * 16_000 / rate, np.arange(len(x)), x).astype(np.float32)


def _similar(wav: np.ndarray, speech: np.ndarray, *, slack_s: float = 0.0, min_corr: float = 0.9) -> None:
    """Same length (codecs may pad the end by ``slack_s``), in time and correlated with the original."""
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(speech) - 2 <= len(wav) <= len(speech) + slack_s * 16_000 + 2, len(wav)
    n = min(len(wav), len(speech))
    corr = float(np.corrcoef(wav[:n], speech[:n])[0, 1])
    assert corr > min_corr, corr


# ---- unusable files: AudioError naming the file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p, s: p.write_bytes(np.random.default_rng(0).bytes(4000)), "unreadable or corrupt audio"),
        (lambda p, s: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p, s: soundfile.write(p, s[:160], 16_000), "too short: 10 ms is less than one video frame"),
    ],
    ids=["corrupt", "zero-bytes", "0.01s"],
)
def test_unusable_speech_is_an_audio_error_naming_the_file(tmp_path: Path, speech, make, problem) -> None:
    path = tmp_path / "speech.wav"
    make(path, speech)
    with pytest.raises(AudioError, match=problem) as err:
        load_audio(path)
    assert err.value.path == str(path)


def test_truncated_wav_is_an_audio_error_not_half_a_clip(tmp_path: Path) -> None:
    """An upload cut in half: the header declares 1.18 s, the file holds 0.59 s. Rendering the half that
    is there would be a silently wrong video; the error names both lengths."""
    data = SPEECH.read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"truncated: the header declares 1\.18 s, the file holds 0\.59 s"):
        load_audio(path)


def test_wav_streamed_with_an_unknown_length_still_loads(tmp_path: Path, speech) -> None:
    """The converse: ffmpeg writing WAV to a pipe cannot go back to fill in the sizes (0xFFFFFFFF)."""
    from sadtalker.video.ffmpeg import ffmpeg_exe

    piped = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(SPEECH), "-f", "wav", "-"], capture_output=True, check=True
    ).stdout
    assert b"data\xff\xff\xff\xff" in piped[:200]
    (tmp_path / "piped.wav").write_bytes(piped)
    assert np.array_equal(load_audio(tmp_path / "piped.wav"), speech)


def test_video_without_sound_given_as_speech_says_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "speech.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=size=64x64:rate=25:duration=0.2", "-c:v", "libx264", str(path))
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path)


def test_non_finite_samples_are_an_audio_error(tmp_path: Path, speech) -> None:
    bad = speech.copy()
    bad[1000] = np.nan
    soundfile.write(tmp_path / "nan.wav", bad, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"non-finite samples \(NaN or Inf\)"):
        load_audio(tmp_path / "nan.wav")


# ---- silence: warns, does not fail -------------------------------------------------------------------------


def test_silence_warns_and_still_gives_coefficients(
    tmp_path: Path, models, face, caplog: pytest.LogCaptureFixture
) -> None:
    from sadtalker.pipeline import audio_to_coefficients

    soundfile.write(tmp_path / "silent.wav", np.zeros(4800, np.float32), 16_000)  # 0.3 s: 7 frames
    with caplog.at_level(logging.WARNING, logger="sadtalker"):
        coeffs = audio_to_coefficients(tmp_path / "silent.wav", face, RenderOptions(), models)
    assert coeffs.num_frames == 7 and np.isfinite(coeffs.coefficients).all()
    assert any("silent" in r.getMessage() and "silent.wav" in r.getMessage() for r in caplog.records)


# ---- rates, channels, containers: 16 kHz mono, the same speech ------------------------------------------


def test_8khz_mono_is_resampled(tmp_path: Path, speech) -> None:
    soundfile.write(tmp_path / "phone.wav", speech[::2], 8_000)  # speech has little energy above 4 kHz
    _similar(load_audio(tmp_path / "phone.wav"), speech, min_corr=0.85)


def test_48khz_6_channels_are_averaged(tmp_path: Path, speech) -> None:
    """Speech in 3 of 6 channels, silence in the others: the mono mix is half the speech."""
    up = _resample(speech, 48_000)
    six = np.zeros((len(up), 6), np.float32)
    six[:, [0, 2, 4]] = up[:, None]
    soundfile.write(tmp_path / "surround.wav", six, 48_000, subtype="FLOAT")
    wav = load_audio(tmp_path / "surround.wav")
    _similar(wav, speech)
    assert np.abs(wav).max() == pytest.approx(np.abs(speech).max() / 2, rel=0.1)


@pytest.mark.parametrize("layout", ["quad", "5.1", "7.1"])
def test_multichannel_aac_is_averaged_whatever_its_layout(tmp_path: Path, speech, layout: str) -> None:
    """AAC in an .m4a goes through ffmpeg: the channel count must come from the stream, not from a guess
    on the layout's name (a quad or 7.1 track was read as mono: 4-8 × too long, samples interleaved)."""
    channels = {"quad": 4, "5.1": 6, "7.1": 8}[layout]
    up = _resample(speech, 48_000)
    soundfile.write(tmp_path / "src.wav", np.repeat(up[:, None], channels, axis=1), 48_000, subtype="FLOAT")
    out = tmp_path / "surround.m4a"
    _ffmpeg(
        "-i", str(tmp_path / "src.wav"), "-af", f"aformat=channel_layouts={layout}", "-c:a", "aac", f"{out}"
    )
    _similar(load_audio(out), speech, slack_s=0.05)


@pytest.mark.parametrize(
    ("ext", "codec", "slack_s"),
    [("mp3", "libmp3lame", 0.0), ("m4a", "aac", 0.05), ("ogg", "libvorbis", 0.0), ("wav", "pcm_f32le", 0.0)],
    ids=["mp3", "m4a", "ogg", "float-wav"],
)
def test_compressed_and_float_containers(
    tmp_path: Path, speech, ext: str, codec: str, slack_s: float
) -> None:
    """mp3/ogg/wav through libsndfile, m4a (AAC) through ffmpeg. AAC pads the end to a whole codec frame
    (up to 40 ms at 16 kHz here); the start is trimmed by ffmpeg (no lip-sync offset)."""
    out = tmp_path / f"speech.{ext}"
    _ffmpeg("-i", str(SPEECH), "-c:a", codec, str(out))
    wav = load_audio(out)
    _similar(wav, speech, slack_s=slack_s, min_corr=0.97 if ext != "wav" else 0.9999)


# ---- length: the configured maximum ---------------------------------------------------------------------


def test_an_hour_and_a_second_is_refused_from_the_header_with_flat_memory(tmp_path: Path) -> None:
    """3601 s of 8 kHz 8-bit mono (29 MB, written in 0.1 s) against the default maximum of an hour: refused
    from the header, before any sample is decoded (decoding it would allocate 115 MB of float32)."""
    path = tmp_path / "hour.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8_000)
        out.writeframes(b"\x80" * (3601 * 8_000))
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"too long: 3601\.0 s > the maximum of 3600 s") as err:
            load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.path == str(path)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB: the samples were decoded"


def test_the_maximum_is_a_setting(tmp_path: Path, models, face, monkeypatch: pytest.MonkeyPatch) -> None:
    """$SADTALKER_MAX_AUDIO_SECONDS lowers it for a worker; the 1.18 s test speech is then too long, also
    through ffmpeg (m4a), whose decoding stops a second past the maximum."""
    from sadtalker.pipeline import audio_to_coefficients

    monkeypatch.setenv("SADTALKER_MAX_AUDIO_SECONDS", "1")
    too_long = r"too long: 1\.2 s > the maximum of 1 s \(SADTALKER_MAX_AUDIO_SECONDS\)"
    with pytest.raises(AudioError, match=too_long):
        audio_to_coefficients(SPEECH, face, RenderOptions(), models)
    _ffmpeg("-i", str(SPEECH), "-c:a", "aac", str(tmp_path / "speech.m4a"))
    monkeypatch.setenv("SADTALKER_MAX_AUDIO_SECONDS", "0.5")
    with pytest.raises(AudioError, match=r"too long: more than the maximum of 0\.5 s"):
        load_audio(tmp_path / "speech.m4a")
    monkeypatch.setenv("SADTALKER_MAX_AUDIO_SECONDS", "an hour")
    with pytest.raises(ValueError, match="SADTALKER_MAX_AUDIO_SECONDS"):
        load_audio(SPEECH)
