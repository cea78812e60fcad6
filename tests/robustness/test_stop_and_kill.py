"""Issue 11, the "Processes" and "Storage down" rows of the matrix: a batch that is stopped or killed ends in
a truthful outcome, leaves no partial file under a final name, and a rerun finishes it.

- SIGTERM (or Ctrl-C): a graceful stop. No new row starts, the rows in flight finish and are journaled, the
  CLI says what ran, what was saved and what was not (exit 143), and a rerun runs only the rows not run. A
  second SIGTERM stops at once.
- The storage breaker: when rows keep failing with transient faults after their retries (storage down),
  the batch stops submitting rows instead of sending each through the same retries (exit 4).
- SIGKILL during the video encoding and during the results write: only temporaries remain, never a
  truncated file under the final name, and the rerun completes.

Subprocess runs use the fake pipeline through tests/fake_site (see tests/pipeline_fakes.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flow_helpers import journaled, make_manifest, start_run

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from flows.render_batch import BatchStopped, render_batch

REPO = Path(__file__).resolve().parents[2]


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"never saw {what} (exit {proc.poll()})")


def _group(pgid: int) -> list[str]:
    """Command lines of the live processes in process group ``pgid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp; zombies have ended
            found.append(cmdline)
    return found


def calls(tmp_path: Path, function: str) -> list[str]:
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith(function + " ")]


def finish(proc: subprocess.Popen[bytes], tmp_path: Path, seconds: float) -> tuple[int, str]:
    try:
        code = proc.wait(seconds)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        tail = (tmp_path / "run.log").read_text()[-3000:]
        raise AssertionError(f"still running after {seconds} s: {tail}") from exc
    return code, (tmp_path / "run.log").read_text()


def test_sigterm_stops_gracefully_and_a_rerun_runs_only_the_rows_not_run(
    tmp_path: Path, fake_pipeline: Any
) -> None:
    """SIGTERM while rows render: the rows in flight finish and are journaled, no further row starts, no
    results.parquet is written, the CLI says what ran and what was not run and exits 143; the rerun runs
    only the rows that never started."""
    slow = b"SLOWRENDER FRAMES=24"  # 12 batches of 0.25 s: 3 s of render per row
    rows = {i: (f"photo-{i}".encode(), b"speech " + i.encode() + b" " + slow) for i in "abcdefgh"}
    manifest, out = make_manifest(tmp_path / "in", rows), tmp_path / "out"
    proc = start_run(tmp_path, manifest, out, "--workers", "2", "--window", "2", "--no-report")
    try:
        wait_for(lambda: len(calls(tmp_path, "render_video")) >= 3, proc, 150, "a third row rendering")
        proc.send_signal(signal.SIGTERM)
        code, log = finish(proc, tmp_path, 90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, log[-3000:]
    assert "STOPPED (SIGTERM received) before every row ran" in log and "NOT RUN" in log, log[-3000:]
    started = {name.removesuffix(".wav") for name in calls(tmp_path, "render_video")}
    journal = journaled(out)
    assert started and set(journal.index) == started, (started, list(journal.index))
    assert (journal["status"] == "succeeded").all()  # the rows in flight were not abandoned
    assert len(started) < len(rows)
    (batch,) = [p for p in out.iterdir() if p.is_dir() and p.name != "cache"]
    assert not (batch / "results.parquet").exists() and not list(batch.rglob("*.tmp"))

    summary = render_batch(manifest=manifest, output=str(out), device="cpu", report=False)
    assert summary.ok and summary.total == len(rows) and summary.resumed == len(started)
    not_run = sorted(f"{i}.wav" for i in rows if i not in started)
    assert sorted(fake_pipeline.calls("render_video")) == not_run
    results = pd.read_parquet(batch / "results.parquet")
    assert list(results["id"]) == list(rows) and (results["status"] == "succeeded").all()


def test_a_second_sigterm_stops_at_once_and_keeps_the_finished_rows(tmp_path: Path) -> None:
    """A row that hangs would hold a graceful stop: the second SIGTERM ends the process at once, and the
    rows that finished before are in the journal."""
    rows = {"a": (b"pa", b"sa FRAMES=3"), "b": (b"pb", b"HANG FRAMES=4")}
    manifest, out = make_manifest(tmp_path / "in", rows), tmp_path / "out"
    proc = start_run(tmp_path, manifest, out, "--workers", "1", "--window", "2", PIPELINE_FAKES_HANG="1")
    try:
        wait_for(lambda: "b.wav" in calls(tmp_path, "audio_to_coefficients"), proc, 150, "row b hanging")
        wait_for(lambda: "a.wav" in calls(tmp_path, "quality_check"), proc, 60, "row a checked")
        proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        assert proc.poll() is None  # graceful: waiting for row b
        proc.send_signal(signal.SIGTERM)
        code, log = finish(proc, tmp_path, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code != 0, log[-3000:]
    journal = journaled(out)
    assert list(journal.index) == ["a"] and journal.loc["a", "status"] == "succeeded", log[-3000:]
    # Nothing of the run outlives it (its ephemeral Prefect server was orphaned before, ~250 MB each time).
    deadline = time.monotonic() + 20
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _group(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, left


def test_the_breaker_stops_the_batch_when_storage_stays_down(
    tmp_path: Path, fake_pipeline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows keep failing with transient faults after their retries (the storage is down): after three in a
    row the batch submits no more rows, and says so (exit 4); once the storage is back, a rerun finishes."""
    rows = {"a": (b"pa", b"sa")}
    rows.update({i: (f"p{i} FLAKY4".encode(), f"s{i}".encode()) for i in "bcdefghij"})  # 4 > 1 + 3 retries
    manifest, out = make_manifest(tmp_path / "in", rows), tmp_path / "out"
    code = cli_main(
        ["run", manifest, "--output", str(out), "--device", "cpu", "--workers", "1", "--window", "1"]
    )
    captured = capsys.readouterr()
    assert code == 4, captured.err
    assert "STOPPED (storage or network unavailable: 3 rows in a row failed" in captured.err
    assert "OSError" in captured.err and "NOT RUN" in captured.err
    tried = fake_pipeline.calls("extract_face")
    assert sorted(set(tried)) == ["a.png", "b.png", "c.png", "d.png"], tried  # window 1: nothing after d
    (batch,) = [p for p in out.iterdir() if p.is_dir() and p.name != "cache"]
    assert not (batch / "results.parquet").exists()
    journal = journaled(out)
    assert journal.loc["a", "status"] == "succeeded" and (journal.drop(index="a")["status"] == "failed").all()

    fake_pipeline.reset()  # the storage is back (FLAKY counts start again: 4 faults are more than 3 retries)
    with pytest.raises(BatchStopped) as stopped:
        render_batch(manifest=manifest, output=str(out), device="cpu", workers=1, window=1, report=False)
    assert stopped.value.summary is not None and stopped.value.summary.resumed == 1 and stopped.value.not_run


def test_sigkill_during_encoding_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    """The real encoder (ffmpeg) is killed with its Python process in the middle of a clip: the final name
    does not exist (only a temporary), and encoding again writes a complete, readable file."""
    from sadtalker.video.ffmpeg import ffmpeg_exe

    try:
        ffmpeg_exe()
    except Exception as exc:  # pragma: no cover - setup installs it
        pytest.skip(f"no ffmpeg: {exc}")
    out = tmp_path / "clip.mp4"
    script = textwrap.dedent(
        f"""
        import sys, time, numpy as np
        from sadtalker.video.encode import VideoWriter
        with VideoWriter({str(out)!r}, fps=25) as writer:
            for i in range(10_000):
                writer.write(np.full((1, 64, 64, 3), i % 255, np.uint8))
                if i == 5:
                    print("writing", flush=True)
                time.sleep(0.02)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"writing"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)  # the Python process only: ffmpeg then sees EOF, like a killed worker
    proc.wait(30)
    time.sleep(1.0)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".clip.")], "ffmpeg's temporary"

    from sadtalker.video.encode import VideoWriter
    from sadtalker.video.ffmpeg import probe

    with VideoWriter(str(out), fps=25) as writer:
        writer.write(np.zeros((10, 64, 64, 3), np.uint8))
    assert probe(out).frames == 10


def test_sigkill_during_the_results_write_leaves_no_results_file_and_the_rerun_completes(
    tmp_path: Path, fake_pipeline: Any
) -> None:
    """The flow is SIGKILLed halfway through writing results.parquet: the final name never holds a partial
    file (only a temporary does), the journal holds every row, and the rerun writes complete results
    without running any row again."""
    rows = {i: (f"photo-{i}".encode(), f"speech {i} FRAMES=3".encode()) for i in "abc"}
    manifest, out = make_manifest(tmp_path / "in", rows), tmp_path / "out"
    proc = start_run(tmp_path, manifest, out, "--no-report", PIPELINE_FAKES_SLOW_WRITE="results.parquet")
    try:
        wait_for(lambda: bool(list(out.glob("*/.results.parquet.*.tmp"))), proc, 150, "the results write")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (batch,) = [p for p in out.iterdir() if p.is_dir() and p.name != "cache"]
    assert not (batch / "results.parquet").exists()
    assert sorted(journaled(out).index) == ["a", "b", "c"]

    summary = render_batch(manifest=manifest, output=str(out), device="cpu", report=False)
    assert summary.ok and summary.resumed == 3 and fake_pipeline.calls("render_video") == []
    assert list(pd.read_parquet(batch / "results.parquet")["id"]) == ["a", "b", "c"]


def test_the_batch_exceptions_survive_pickling_with_their_fields() -> None:
    """Prefect may copy a flow's exception between processes: the CLI's exit code and message read the
    fields (signal, rows not run, journal) from the copy."""
    import pickle

    from flows.render_batch import ResultsNotSavedError

    stopped = BatchStopped("STOPPED", signum=15, not_run=3, journal="j", journaled=2, unsaved=1)
    copy = pickle.loads(pickle.dumps(stopped))
    assert type(copy) is BatchStopped and str(copy) == "STOPPED" and vars(copy) == vars(stopped)
    unsaved = ResultsNotSavedError("NOT SAVED", errors={"results.parquet": "down"}, journal="j", journaled=4)
    copy = pickle.loads(pickle.dumps(unsaved))
    assert (
        type(copy) is ResultsNotSavedError and vars(copy) == vars(unsaved) and copy.errors["results.parquet"]
    )
