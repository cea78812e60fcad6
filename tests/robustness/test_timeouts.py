"""Issue 11, finding 6: every stage has a time limit; a hung ffmpeg or a stuck render cannot hold a batch.

A "hung ffmpeg" is a shell script put in place of the binary (``$SADTALKER_FFMPEG`` / ``$SADTALKER_FFPROBE``)
that starts a child (``sleep 300``) and waits for it: killing only the script would leave the child behind
with ffmpeg's pipes open, so these tests also prove that the whole process group goes. Each blocking call
runs under a guard thread, so a missing limit fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ffmpeg as ffmpeg_python
import numpy as np
import pandas as pd
import pytest
from flow_helpers import make_manifest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as batch_cli
from flows.render_batch import render_batch
from sadtalker import storage
from sadtalker.audio.load import load_audio
from sadtalker.errors import StageTimeout
from sadtalker.qc.decode import FrameReader
from sadtalker.render.animate import FaceAnimator
from sadtalker.timeouts import StageTimeouts, stage_deadline
from sadtalker.video import VideoWriter, probe
from sadtalker.video.ffmpeg import FFmpegError, run_ffmpeg

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(sys.platform != "linux", reason="processes are observed through /proc"),
]

HANG_SCRIPT = """#!/bin/sh
echo $$ >> "{pids}"
sleep 300 &
echo $! >> "{pids}"
wait
"""


def _pids(pid_file: Path) -> list[int]:
    return [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []


def _alive(pid: int) -> bool:
    """Running, or a zombie this process has not reaped (a zombie adopted by init is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state != "Z" or int(ppid) == os.getpid()


def assert_all_gone(pid_file: Path, within: float = 5.0) -> None:
    pids = _pids(pid_file)
    assert len(pids) == 2, f"the fake ffmpeg did not start: {pids}"
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "ffmpeg (or a process it started) was left running"


def _children() -> set[int]:
    from flows.stopping import _child_pids  # the listing a second stop signal terminates

    return set(_child_pids())


@pytest.fixture
def hung_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ffmpeg and ffprobe that never end; yields the file where they write their pids."""
    pid_file = tmp_path / "hung.pids"
    script = tmp_path / "bin" / "ffmpeg"
    script.parent.mkdir()
    script.write_text(HANG_SCRIPT.format(pids=pid_file))
    script.chmod(0o755)
    monkeypatch.setenv("SADTALKER_FFMPEG", str(script))
    monkeypatch.setenv("SADTALKER_FFPROBE", str(script))
    yield pid_file
    for pid in _pids(pid_file):  # a failed test must not leave them behind either
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def guarded(fn: Callable[[], Any], seconds: float = 40.0) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a thread; returns (its exception, seconds taken); fails if it is still blocked."""
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            outcome["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still blocked after {seconds:.0f} s: nothing stopped the hung ffmpeg")
    return outcome.get("error"), time.monotonic() - start


def write_wav(path: Path, seconds: float, rate: int = 16_000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.2 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return path


# --- (a) every ffmpeg / ffprobe process has a limit, and its whole process group goes ----------------------


def _encode(folder: Path) -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    with VideoWriter(folder / "clip.mp4") as writer:  # the fake never reads: the pipe fills, write blocks
        for _ in range(200):
            writer.write(frame)


OPERATIONS: dict[str, Callable[[Path], Any]] = {
    "probe (ffprobe)": lambda media: probe(media),
    "decode (QC frames)": lambda media: list(FrameReader(media, 64, 64)),
    "audio (m4a through ffmpeg)": lambda media: load_audio(media),
    "encode (frames piped in)": lambda media: _encode(media.parent / "encoded"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_hung_ffmpeg_is_killed_at_the_stage_deadline_with_its_process_group(
    operation: str, hung_ffmpeg: Path, tmp_path: Path
) -> None:
    media = tmp_path / "in.m4a"
    media.write_bytes(b"not audio that soundfile could read" * 10)
    (tmp_path / "encoded").mkdir()

    def run() -> None:
        with stage_deadline("qc", "row r", 1.5):
            OPERATIONS[operation](media)

    error, seconds = guarded(run)
    assert isinstance(error, StageTimeout), repr(error)
    assert str(error).startswith("qc of row r exceeded 1.5 s; ") and "ffmpeg was killed" in str(error)
    assert not error.transient and seconds < 15
    assert_all_gone(hung_ffmpeg)
    assert list((tmp_path / "encoded").iterdir()) == []  # no video, no temporaries


def test_hung_ffmpeg_with_a_timeout_of_its_own_outside_any_stage(hung_ffmpeg: Path, tmp_path: Path) -> None:
    copy = ffmpeg_python.input(str(tmp_path / "x.mp4")).output(str(tmp_path / "y.mp4"), c="copy")
    error, seconds = guarded(lambda: run_ffmpeg(copy, "muxing x.mp4", timeout=1.0))
    assert isinstance(error, FFmpegError) and "muxing x.mp4: timed out after 1 s; ffmpeg was killed" in str(
        error
    )
    assert seconds < 15
    assert_all_gone(hung_ffmpeg)


# --- (b) the render's deadline scales with its frames and fires between generator batches -----------------


class SlowAnimator(FaceAnimator):
    """The engine's clip loop (:meth:`FaceAnimator.frames`) around a stand-in for its networks: ``delay``
    seconds per batch of grey frames."""

    coeff_nc = 70

    def __init__(self, delay: float, device: str = "cpu"):
        import torch

        self.delay, self.batches, self.cleared = delay, 0, False
        self._device = torch.device(device)  # "cuda": render_video prefetches (the batches stay on the CPU)

    @property
    def device(self) -> Any:
        return self._device

    def set_source(self, image: Any, semantics: Any) -> None:
        pass

    def clear_source(self) -> None:
        self.cleared = True

    def animate(self, targets: np.ndarray, batch_size: int, **angles: Any) -> Iterator[Any]:
        import torch

        for start in range(0, len(targets), batch_size):
            time.sleep(self.delay)
            self.batches += 1
            yield torch.full((min(batch_size, len(targets) - start), 3, 256, 256), 0.5)


def _render_inputs(tmp_path: Path, frames: int) -> tuple[Any, Any, Path, Path]:
    import sadtalker.qc
    import sadtalker.render.windows
    import sadtalker.video  # noqa: F401  (imported now, not inside the timed render)
    from sadtalker.face.crop import crop_source
    from sadtalker.records import Coefficients, FaceRecord

    photo = np.full((96, 96, 3), 128, np.uint8)
    record, source = crop_source(photo, "resize", None, 256, path="photo.png")
    face = FaceRecord(
        source_image=source,
        coeff_3dmm=np.zeros((1, 73), np.float32),
        full_coeff=np.zeros((1, 257), np.float32),
        landmarks=None,
        crop=record.to_dict(),
        num_faces=1,
        backend="stub",
    )
    coeffs = Coefficients(np.zeros((frames, 70), np.float32), frames, frames / 25, np.zeros((frames, 1)))
    return face, coeffs, tmp_path / "photo.png", write_wav(tmp_path / "speech.wav", frames / 25 + 0.1)


def _stub_models(animator: SlowAnimator) -> Any:
    return SimpleNamespace(
        animator=lambda *args: animator, weights=lambda *args: SimpleNamespace(synthetic=True)
    )


@pytest.mark.parametrize("device", ["cpu", "cuda"], ids=["in-line", "prefetched"])
def test_render_stops_at_the_first_batch_past_its_frame_scaled_deadline(tmp_path: Path, device: str) -> None:
    """Also with the CUDA path's prefetching thread (a stand-in engine that claims CUDA): the render stops
    at a batch boundary, the thread is stopped and joined, and the engine's source is cleared."""
    from sadtalker.options import RenderOptions
    from sadtalker.pipeline import render_video

    face, coeffs, photo, speech = _render_inputs(tmp_path, frames=20)
    animator = SlowAnimator(delay=0.3, device=device)  # 10 batches of 2: 3 s
    threads = set(threading.enumerate())
    limits = StageTimeouts(render_base_s=0.5, render_per_frame_s=0.05)  # 0.5 + 20 x 0.05 = 1.5 s
    out = tmp_path / "out" / "clip.mp4"
    before = _children()

    def run() -> None:
        with limits.deadline("render", "row r", frames=coeffs.num_frames):
            render_video(
                face, coeffs, photo, speech, out, RenderOptions(batch_size=2), _stub_models(animator)
            )

    error, seconds = guarded(run)
    assert isinstance(error, StageTimeout), repr(error)
    assert str(error).startswith(  # message: the limit, how it was computed, how far the render got
        "render of row r exceeded 1.5 s (20 frames: 0.5 s + 0.05 s/frame); stopped after "
    )
    assert 1 <= animator.batches < 10 and seconds < 10  # stopped at a batch boundary, not at the end
    assert animator.cleared and list(out.parent.iterdir()) == []  # no video, no temporary
    assert not _children() - before  # the encoder was killed and reaped
    assert not [t for t in set(threading.enumerate()) - threads if t.name == "prefetch"]


def test_waiting_for_the_renderer_does_not_count(tmp_path: Path) -> None:
    from sadtalker import pipeline
    from sadtalker.options import RenderOptions

    face, coeffs, photo, speech = _render_inputs(tmp_path, frames=4)
    held = threading.Event()

    def other_clip() -> None:  # another row holds the process's renderer for 2 s
        with pipeline._RENDER_LOCK:
            held.set()
            time.sleep(2.0)

    threading.Thread(target=other_clip, daemon=True).start()
    held.wait(5)
    limits = StageTimeouts(render_base_s=1.0, render_per_frame_s=0.01)
    with limits.deadline("render", "row r", frames=4):
        result = pipeline.render_video(
            face, coeffs, photo, speech, tmp_path / "clip.mp4", RenderOptions(), _stub_models(SlowAnimator(0))
        )
    assert result.num_frames == 4 and (tmp_path / "clip.mp4").is_file()


# --- (c) through the flow: the stuck rows fail with the reason, the others succeed, the batch ends -------


def test_stuck_rows_fail_with_the_timeout_while_the_others_succeed(
    tmp_path: Path, fake_pipeline: Any, hung_ffmpeg: Path
) -> None:
    manifest = make_manifest(
        tmp_path / "in",
        {
            "a": (b"photo a", b"speech"),
            "slow": (b"photo slow", b"speech SLOWRENDER FRAMES=60"),  # 30 batches x 0.25 s, limit 4 s
            "stall": (b"photo stall", b"speech DECODE"),  # decodes with the hung ffmpeg, limit 2 s
            "b": (b"photo b", b"speech FRAMES=5"),
        },
    )
    start = time.monotonic()
    summary = render_batch(
        manifest=manifest,
        output=str(tmp_path / "out"),
        device="cpu",
        workers=4,
        timeouts={"coeffs_s": 2, "render_base_s": 1, "render_per_frame_s": 0.05},
    )
    assert time.monotonic() - start < 120
    results = pd.read_parquet(summary.results_uri).set_index("id")
    assert (summary.succeeded, summary.failed) == (2, 2)
    assert dict(results["status"]) == {
        "a": "succeeded",
        "slow": "failed",
        "stall": "failed",
        "b": "succeeded",
    }
    assert results.loc["slow", "failed_stage"] == "render"
    assert results.loc["slow", "error"] == (
        "StageTimeout: render of row slow exceeded 4 s (60 frames: 1 s + 0.05 s/frame)"
    )
    assert results.loc["stall", "failed_stage"] == "coeffs"
    stall = results.loc["stall", "error"]
    assert stall.startswith("StageTimeout: coeffs of row stall exceeded 2 s; ") and stall.endswith(
        "stall.wav: ffmpeg was killed"
    )
    assert 1 <= Counter(fake_pipeline.calls("render_batch"))["slow.wav"] < 30  # stopped midway
    # never retried: one attempt each
    assert Counter(fake_pipeline.calls("render_video"))["slow.wav"] == 1
    assert Counter(fake_pipeline.calls("audio_to_coefficients"))["stall.wav"] == 1
    assert not (Path(summary.batch_uri) / "items" / "slow" / "video.mp4").exists()
    assert_all_gone(hung_ffmpeg)


# --- (d) configurable: flow parameter, both command lines, the storage layer; bad names refused first -----


def test_limits_are_named_checked_and_the_render_scales_with_frames() -> None:
    defaults = StageTimeouts()
    assert defaults.limit("render", 10) == (600 + 10 * 60, "10 frames: 600 s + 60 s/frame")
    assert defaults.limit("face") == (600, None) and defaults.limit("qc") == (1800, None)
    limits = StageTimeouts.from_mapping({"render_base_s": 60, "render_per_frame_s": "5"})
    assert limits.limit("render", 13) == (125, "13 frames: 60 s + 5 s/frame") and limits.face_s == 600
    assert StageTimeouts.parse_items(["qc_s=30", "face_s = 2.5"]) == {"qc_s": 30.0, "face_s": 2.5}
    with pytest.raises(ValueError, match=r"unknown timeouts 'bogus', 'render_s': use face_s, coeffs_s, "):
        StageTimeouts.from_mapping({"render_s": 1, "bogus": 2})
    for bad in (0, -1, float("nan"), float("inf"), "soon", True):
        with pytest.raises(ValueError, match="face_s"):
            StageTimeouts.from_mapping({"face_s": bad})
    with pytest.raises(ValueError, match="NAME=SECONDS"):
        StageTimeouts.parse_items(["face_s"])


def test_flow_and_cli_refuse_bad_names_before_any_row_work(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_manifest(tmp_path / "in", {"a": (b"photo a", b"speech")})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown timeout 'render_s'"):
        render_batch(manifest=manifest, output=str(out), device="cpu", timeouts={"render_s": 10})
    assert batch_cli(["run", manifest, "-o", str(out), "--device", "cpu", "--timeout", "bogus=1"]) == 2
    assert "unknown timeout 'bogus'" in capsys.readouterr().err
    assert fake_pipeline.CALLS == [] and not out.exists()

    seen: dict[str, Any] = {}

    def spy(**kwargs: Any) -> Any:
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr("flows.render_batch.render_batch", spy)
    argv = ["run", manifest, "-o", str(out), "--timeout", "render_per_frame_s=30", "--timeout", "face_s=5"]
    assert batch_cli(argv) == 2
    assert seen["timeouts"] == {"render_per_frame_s": 30.0, "face_s": 5.0}


def test_one_pair_command_takes_the_same_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sadtalker.loader
    from sadtalker.cli import main as sadtalker_cli

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bad --timeout must stop the command before any work")

    monkeypatch.setattr(sadtalker.loader, "check_weights", must_not_run)
    argv = ["render", "--image", "p.png", "--audio", "s.wav", "--out", str(tmp_path / "o.mp4")]
    assert sadtalker_cli([*argv, "--timeout", "nope_s=3"]) == 2
    assert "unknown timeout 'nope_s'" in capsys.readouterr().err
    seen: dict[str, Any] = {}

    def render_pair(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise StageTimeout("stop here")

    monkeypatch.setattr(
        sadtalker.loader, "check_weights", lambda *a, **k: SimpleNamespace(warnings=(), policy="auto")
    )
    monkeypatch.setattr(sadtalker.loader.Models, "shared", classmethod(lambda cls, policy=None: None))
    monkeypatch.setattr("sadtalker.pipeline.render_pair", render_pair)
    assert sadtalker_cli([*argv, "--timeout", "render_per_frame_s=7"]) == 2
    assert seen["timeouts"] == StageTimeouts(render_per_frame_s=7)


def test_storage_requests_get_the_stage_io_timeout() -> None:
    assert storage.storage_options("/local/x") == {}
    with StageTimeouts(io_s=7).deadline("face", "row a"):
        options = storage.storage_options("s3://bkt/key")
        fs, _ = storage.filesystem("s3://bkt/key")
    assert options["config_kwargs"] == {"connect_timeout": 7.0, "read_timeout": 7.0}
    assert fs.config_kwargs == {"connect_timeout": 7.0, "read_timeout": 7.0}  # s3fs hands them to botocore
    assert storage.storage_options("s3://bkt/key")["config_kwargs"]["read_timeout"] == StageTimeouts.io_s
