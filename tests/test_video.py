"""sadtalker.video: streaming encode + mux (durations, atomicity, odd sizes), probe, paste-back, and the
resize to the output size of the official ``AnimateFromCoeff.generate`` (the uint8 conversion before it is
the render engine's: tests/test_render.py)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import ffmpeg as ffmpeg_python
import numpy as np
import pytest

from sadtalker.audio.load import load_audio
from sadtalker.qc.decode import FrameReader, decode_audio
from sadtalker.video import (
    FFmpegError,
    PasteBack,
    VideoWriter,
    ffmpeg_exe,
    output_size,
    probe,
    resize_frames,
)
from sadtalker.video.encode import remove_stale_temps
from sadtalker.video.ffmpeg import _channels, run_ffmpeg

pytestmark = pytest.mark.timeout(120)

FPS = 25
FRAME = 0.04  # seconds


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.03 s of 440 Hz, 16-bit mono 22.05 kHz WAV: T = floor(1.03 · 25) = 25 frames, audio cut to 1.00 s."""
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    rate = 22050
    t = np.arange(int(1.03 * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def frames_of(n: int, width: int, height: int) -> np.ndarray:
    """(n, height, width, 3) uint8: left half red, right half blue, a moving bright bar."""
    out = np.zeros((n, height, width, 3), np.uint8)
    out[:, :, : width // 2, 0] = 200
    out[:, :, width // 2 :, 2] = 200
    for i in range(n):
        out[i, (i * 3) % height, :, :] = 255
    return out


def decode(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames of a video, decoded by the ffmpeg binary."""
    info = probe(path)
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def assert_clip(path: Path, frames: int, width: int, height: int) -> None:
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (frames, FPS, width, height)
    assert info.has_audio and info.audio_codec == "aac" and info.sample_rate == 16000
    assert abs(info.audio_duration - frames * FRAME) <= FRAME
    assert abs(info.duration - frames * FRAME) <= FRAME


@pytest.mark.parametrize("known_t", [True, False], ids=["one-process", "mux-after"])
def test_writes_frames_with_audio_cut_to_video(tmp_path: Path, tone: Path, known_t: bool) -> None:
    t = math.floor(1.03 * FPS)
    out = tmp_path / "out" / "clip.mp4"
    with VideoWriter(out, audio=tone, num_frames=t if known_t else None) as writer:
        for chunk in np.array_split(frames_of(t, 64, 64), 3):  # chunks, as the renderer yields them
            writer.write(chunk)
    assert writer.frames_written == t and writer.output_size == (64, 64)
    assert_clip(out, t, 64, 64)
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.mp4"]
    decoded = decode(out)
    assert decoded.shape == (t, 64, 64, 3)
    assert np.abs(decoded[:, 32:, 4:28].astype(int) - [200, 0, 0]).mean() < 12  # red left half survives


def test_probe_without_ffprobe_matches_ffprobe(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, audio=tone, num_frames=25) as writer:
        writer.write(frames_of(25, 96, 80))
    fallback = probe(out, use_ffprobe=False)
    assert (fallback.frames, fallback.fps, fallback.width, fallback.height) == (25, 25.0, 96, 80)
    assert fallback.has_audio and fallback.audio_codec == "aac"
    try:
        reference = probe(out, use_ffprobe=True)
    except FFmpegError:
        pytest.skip("no ffprobe here")
    assert fallback.audio_duration == pytest.approx(reference.audio_duration, abs=1e-3)
    assert fallback.duration == pytest.approx(reference.duration, abs=1e-3)


def test_probe_without_ffprobe_reads_rate_and_channels_from_the_stream(tmp_path: Path) -> None:
    """NTSC rate and 5.1 audio: the fallback's rate comes from the packets (not a rounded log line), its
    channel count from the layout's name, as ffprobe gives them."""
    out = tmp_path / "ntsc.mp4"
    video = ffmpeg_python.input("testsrc=size=64x48:rate=30000/1001", format="lavfi", t=0.5)
    audio = ffmpeg_python.input("aevalsrc=0.1*sin(2*PI*440*t):c=5.1:s=48000", format="lavfi", t=0.5)
    run_ffmpeg(
        ffmpeg_python.output(video, audio, str(out), vcodec="libx264", acodec="aac"), "making ntsc.mp4"
    )
    fallback = probe(out, use_ffprobe=False)
    assert fallback.fps == pytest.approx(30000 / 1001, abs=1e-9) and fallback.channels == 6
    assert (fallback.frames, fallback.sample_rate) == (15, 48000)
    try:
        reference = probe(out, use_ffprobe=True)
    except FFmpegError:
        pytest.skip("no ffprobe here")
    assert (fallback.fps, fallback.channels, fallback.frames) == (
        reference.fps,
        reference.channels,
        reference.frames,
    )


@pytest.mark.parametrize(
    ("layout", "channels"),
    [("mono", 1), ("stereo", 2), ("5.1(side)", 6), ("7.1.4", 12), ("22.2", 24), ("quad", 4)]
    + [("3 channels", 3), ("6 channels (FL+FR+FC+LFE+BL+BR)", 6), ("ambisonic 1", None), ("", None)],
)
def test_channels_of_a_layout_name(layout: str, channels: int | None) -> None:
    assert _channels(layout) == channels


def test_every_ffmpeg_run_is_an_ffmpeg_python_graph_with_the_global_options(
    tmp_path: Path, tone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoder (one process and mux after), both probes, the QC frame and audio readers and the audio
    loader: every argv comes from ffmpeg_command (the global options that .global_args puts last)."""
    started: list[list[str]] = []

    class Recording(subprocess.Popen):
        def __init__(self, args: list[str], *rest: object, **kwargs: object) -> None:
            started.append(list(args))
            super().__init__(args, *rest, **kwargs)  # type: ignore[arg-type]

    m4a = tmp_path / "speech.m4a"
    run_ffmpeg(ffmpeg_python.input(str(tone)).output(str(m4a), acodec="aac"), "making speech.m4a")
    monkeypatch.setattr(subprocess, "Popen", Recording)
    for num_frames in (25, None):
        with VideoWriter(tmp_path / f"clip{num_frames}.mp4", audio=tone, num_frames=num_frames) as writer:
            writer.write(frames_of(25, 64, 64))
    clip = tmp_path / "clip25.mp4"
    probe(clip, use_ffprobe=False)
    assert sum(1 for _ in FrameReader(clip, 64, 64, max_side=32)) == 25
    assert decode_audio(clip)[1] is None
    assert load_audio(m4a).size > 0
    ffmpeg_runs = [cmd for cmd in started if cmd[0] == ffmpeg_exe()]
    assert len(ffmpeg_runs) == 7
    for cmd in ffmpeg_runs:
        assert cmd[-6:-2] == ["-hide_banner", "-nostdin", "-nostats", "-loglevel"] and cmd[-1] == "-y", cmd
    started.clear()
    try:
        probe(clip, use_ffprobe=True)
    except FFmpegError:
        return  # no ffprobe here
    assert started[0][1:5] == ["-show_format", "-show_streams", "-of", "json"]  # ffmpeg.probe's command


def test_bundled_imageio_ffmpeg_without_ffprobe(
    tmp_path: Path, tone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user with only the imageio-ffmpeg wheel gets: its static binary, no ffprobe."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setenv("SADTALKER_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("SADTALKER_FFPROBE", "")
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, audio=tone) as writer:
        writer.write(frames_of(25, 64, 64))
    assert_clip(out, 25, 64, 64)


def test_exception_inside_with_leaves_nothing(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="renderer exploded"), VideoWriter(out, audio=tone) as writer:
        writer.write(frames_of(10, 64, 64))
        raise RuntimeError("renderer exploded")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous result")
    with (
        pytest.raises(ValueError, match="10 frames written, 25 expected"),
        VideoWriter(out, num_frames=25) as w,
    ):
        w.write(frames_of(10, 64, 64))
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_ffmpeg_error_carries_stderr(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    with pytest.raises(FFmpegError) as info, VideoWriter(out, preset="no-such-preset") as writer:
        writer.write(frames_of(25, 64, 64))
    assert "preset" in str(info.value).lower()
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"), VideoWriter(tmp_path / "a.mp4") as writer:
        writer.write(np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="differs"), VideoWriter(tmp_path / "b.mp4") as writer:
        writer.write(frames_of(2, 16, 16))
        writer.write(frames_of(2, 18, 16))
    with pytest.raises(ValueError, match="no frames"), VideoWriter(tmp_path / "c.mp4"):
        pass
    with (
        pytest.raises(ValueError, match="more than"),
        VideoWriter(tmp_path / "d.mp4", num_frames=3) as writer,
    ):
        writer.write(frames_of(2, 16, 16))
        writer.write(frames_of(2, 16, 16))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("policy", "expected"), [("pad", (64, 82)), ("macro16", (64, 96))])
def test_odd_frame_sizes(tmp_path: Path, tone: Path, policy: str, expected: tuple[int, int]) -> None:
    out = tmp_path / "odd.mp4"
    frames = frames_of(25, 63, 81)
    with VideoWriter(out, audio=tone, num_frames=25, size_policy=policy) as writer:  # type: ignore[arg-type]
        writer.write(frames)
    assert writer.frame_size == (63, 81) and writer.output_size == expected
    assert_clip(out, 25, *expected)
    decoded = decode(out)
    if policy == "pad":  # no resampling: the original pixels are where they were
        assert np.abs(decoded[:, :81, :63].astype(int) - frames).mean() < 8


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # an unreaped orphan counts as finished


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to watch the orphaned ffmpeg")
def test_killed_process_leaves_no_final_file(tmp_path: Path) -> None:
    """SIGKILL mid-encoding: no cleanup code runs, yet the final name never appears; the temporary that the
    orphaned ffmpeg finishes on EOF is swept by remove_stale_temps."""
    out = tmp_path / "clip.mp4"
    script = (
        "import sys, numpy as np\n"
        "from sadtalker.video import VideoWriter\n"
        f"w = VideoWriter({str(out)!r}, num_frames=50).__enter__()\n"
        "w.write(np.zeros((10, 64, 64, 3), np.uint8))\n"
        "print(w._proc.pid, flush=True)\n"
        "sys.stdin.read()\n"  # block until killed
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo
    )
    try:
        assert proc.stdout is not None
        ffmpeg_pid = int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while _running(ffmpeg_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not out.exists()
    remove_stale_temps(tmp_path, older_than_s=-1)
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps(tmp_path: Path) -> None:
    stale = tmp_path / ".clip.0123456789ab.sadtmp.mp4"
    stale.write_bytes(b"")
    keep = tmp_path / "clip.mp4"
    keep.write_bytes(b"")
    assert remove_stale_temps(tmp_path, older_than_s=-1) == [stale]
    assert keep.exists() and not stale.exists()


# -- paste-back -------------------------------------------------------------------------------------------


def background(width: int = 200, height: int = 160) -> np.ndarray:
    """A smooth colour gradient photo, (height, width, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 97 + 80], -1).astype(np.uint8)


def textured(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (5, 5), 1.5)


def test_paste_puts_the_patch_at_the_box(tmp_path: Path) -> None:
    bg = background()
    frame = textured(64)
    box = (60, 40, 124, 104)  # 64 × 64: no resize, so the patch's gradients appear 1:1
    out = PasteBack(bg, box)(frame)
    assert out.shape == bg.shape and out.dtype == np.uint8
    changed = np.argwhere((out != bg).any(axis=2))
    assert changed.min(0).tolist() >= [41, 61] and changed.max(0).tolist() <= [102, 122]
    outside = np.ones(bg.shape[:2], bool)
    outside[40:104, 60:124] = False
    assert np.array_equal(out[outside], bg[outside])  # far background untouched

    # Poisson blending keeps the patch's gradients (not its absolute colours) inside the box, at the box:
    # they match best with no shift, clearly better than one pixel off.
    def gradient_match(dx: int, dy: int) -> float:
        inner_out = out[42 + dy : 102 + dy, 62 + dx : 122 + dx].astype(float)
        inner_patch = frame[2:62, 2:62].astype(float)
        return np.corrcoef(np.diff(inner_out, axis=1).ravel(), np.diff(inner_patch, axis=1).ravel())[0, 1]

    assert gradient_match(0, 0) > 0.85
    assert (
        max(gradient_match(dx, dy) for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)])
        < gradient_match(0, 0) - 0.1
    )
    assert np.array_equal(bg, background())  # the background array itself is not modified


@pytest.mark.parametrize(
    "box",
    [(-30, -20, 34, 44), (170, 130, 234, 194), (0, 0, 200, 160), (-10, 50, 300, 60), (500, 500, 564, 564)],
    ids=["top-left", "bottom-right", "whole", "thin", "outside"],
)
def test_paste_never_crashes_at_borders(box: tuple[int, int, int, int]) -> None:
    bg = background()
    paste = PasteBack(bg, box)
    out = paste(textured(64))
    assert out.shape == bg.shape
    x1, y1, x2, y2 = box
    mask = np.ones(bg.shape[:2], bool)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = False
    assert np.array_equal(out[mask], bg[mask])
    if paste.clamped is None:
        assert np.array_equal(out, bg)


def test_paste_box_in_downscaled_space() -> None:
    bg = background(200, 160)
    paste = PasteBack(bg, (30, 20, 62, 52), box_space=(100, 80))  # box found on a half-size image
    assert paste.box == (60, 40, 124, 104)


def test_paste_many_blends_a_batch_as_one_frame_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """PasteBack.many: the batch's frames blended in parallel threads are those of one at a time, in
    order; with one thread (a 1-core host) it blends them in this thread."""
    from sadtalker.video import paste as paste_module

    bg = background()
    paste = PasteBack(bg, (40, 30, 140, 130))
    frames = np.stack([textured(64, seed=k) for k in range(5)])
    expected = np.stack([paste(frame) for frame in frames])
    monkeypatch.setattr(paste_module, "PASTE_THREADS", 3)
    np.testing.assert_array_equal(paste.many(frames), expected)
    monkeypatch.setattr(paste_module, "PASTE_THREADS", 1)
    np.testing.assert_array_equal(paste.many(frames), expected)
    assert paste.many(frames[:1]).shape == (1, *bg.shape)


# -- post-processing (official AnimateFromCoeff.generate) ------------------------------------------------


def test_output_size_and_resize() -> None:
    assert output_size(256, (256, 256)) == (256, 256)
    assert output_size(256, (200, 259)) == (256, 331)  # trunc(256 · 259 / 200) = trunc(331.52)
    assert output_size(512, (300, 200)) == (512, 341)
    frames = np.random.default_rng(2).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    resized = resize_frames(frames, 32, 41)
    assert resized.shape == (3, 41, 32, 3)
    assert np.array_equal(resized[1], cv2.resize(frames[1], (32, 41), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(resize_frames(frames, 32, 32), frames)
