"""Issue 11, finding 7: every row was submitted at once, and results were written only at the end.

With the fake pipeline (tests/pipeline_fakes.py): the flow keeps at most ``window`` rows submitted; finished
rows' results go to the batch's results journal (``results.partial/``) while it runs, so that a failed final
write (storage down) or a killed flow process still leaves them, the CLI says what was saved (exit 3, not
"did not run"), and a rerun merges them into a full ``results.parquet`` without running them again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flow_helpers import journaled, make_manifest, start_run

import flows  # noqa: F401  (offline Prefect settings first)
import flows.render_batch as render_batch_module
from flows.cli import main as cli_main
from flows.render_batch import render_batch
from sadtalker import storage

REPO = Path(__file__).resolve().parents[2]


def journal_of(batch: Path) -> pd.DataFrame:
    """Every record in the batch's journal parts, newest per row id."""
    assert list(batch.glob("results.partial/part-*.parquet")), f"no journal part in {batch}"
    return journaled(batch, "results.partial/part-*.parquet")


def test_at_most_window_rows_are_in_flight(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows submitted to the task runner and not yet collected never exceed the window (given, or 2 per
    worker by default), and the window is used: rows do overlap."""
    manifest = make_manifest(
        tmp_path / "in", {f"r{i}": (f"p{i}".encode(), b"speech FRAMES=3") for i in range(9)}
    )
    lock, count = threading.Lock(), {"now": 0, "max": 0, "submitted": 0}
    submit, collect = render_batch_module._submit_row, render_batch_module._collect_row

    def counted_submit(*args: Any, **kwargs: Any) -> Any:
        with lock:
            count["now"] += 1
            count["submitted"] += 1
            count["max"] = max(count["max"], count["now"])
        return submit(*args, **kwargs)

    def counted_collect(*args: Any, **kwargs: Any) -> Any:
        result = collect(*args, **kwargs)
        with lock:
            count["now"] -= 1
        return result

    monkeypatch.setattr(render_batch_module, "_submit_row", counted_submit)
    monkeypatch.setattr(render_batch_module, "_collect_row", counted_collect)

    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), workers=2, window=3, device="cpu")
    assert summary.ok and summary.total == 9 and count["submitted"] == 9
    assert count["max"] == 3, count  # never more than the window, and the window filled

    count.update(now=0, max=0, submitted=0)
    again = render_batch(manifest=manifest, output=str(tmp_path / "out2"), workers=1, device="cpu")
    assert again.ok and count["submitted"] == 9 and count["max"] == 2, count  # default: 2 per worker


def test_a_failed_results_write_keeps_the_journal_and_a_rerun_merges_it(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The storage fails for results.parquet at the end (as when the S3 server went away): the CLI says the
    batch ran, what the journal saved and where (exit 3, not 2 "did not run"); the journal and `results`
    show every finished row; a rerun runs only the failed row again and writes the full results."""
    rows = {i: (f"photo-{i}".encode(), f"speech {i} FRAMES=4".encode()) for i in "abcdef"}
    rows["e"] = (b"photo NOFACE", b"speech")  # fails at face: runs again on the rerun
    manifest = make_manifest(tmp_path / "in", rows)
    out = tmp_path / "out"
    write_bytes = storage.write_bytes

    def storage_down_for_results(uri: str, data: bytes) -> str:
        if uri.endswith("results.parquet"):
            raise OSError("Could not connect to the endpoint URL: http://127.0.0.1:8333/bkt (simulated)")
        return write_bytes(uri, data)

    monkeypatch.setattr(storage, "write_bytes", storage_down_for_results)
    code = cli_main(["run", manifest, "--output", str(out), "--device", "cpu", "--no-report"])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "did not run" not in captured.err and "the batch ran" in captured.err
    assert "results.parquet: OSError: Could not connect" in captured.err
    assert "SAVED: the results of 6 row(s) of this run in the results journal" in captured.err
    assert "results.partial" in captured.err and "5/6 succeeded" in captured.out
    (batch,) = [p for p in out.iterdir() if p.is_dir() and p.name != "cache"]
    assert not (batch / "results.parquet").exists()

    journal = journal_of(batch)
    assert sorted(journal.index) == list("abcdef")
    assert journal.loc["e", "status"] == "failed" and journal.loc["e", "failed_stage"] == "face"
    assert (journal.drop(index="e")["status"] == "succeeded").all()
    assert cli_main(["results", str(batch)]) == 0  # the journal, read back while results.parquet is missing
    shown = capsys.readouterr()
    assert "results journal holds" in shown.err and "6 rows, 1 failed, 5 succeeded" in shown.out

    monkeypatch.setattr(storage, "write_bytes", write_bytes)  # the storage is back
    fake_pipeline.reset()
    summary = render_batch(manifest=manifest, output=str(out), device="cpu", report=False)
    assert summary.resumed == 5 and (summary.succeeded, summary.failed) == (5, 1)
    assert fake_pipeline.calls("extract_face") == ["e.png"]  # only the failed row ran again
    assert fake_pipeline.calls("render_video") == []
    results = pd.read_parquet(batch / "results.parquet").set_index("id")
    assert list(results.index) == list("abcdef") and list(results["row"]) == list(range(6))
    ok = list("abcdf")
    assert (results.loc[ok, "total_s"] == journal.loc[ok, "total_s"]).all()  # the earlier run's records
    assert (results.loc[ok, "video_uri"] == journal.loc[ok, "video_uri"]).all()
    assert results.loc[ok, "render_reused"].all() and results.loc["e", "failed_stage"] == "face"
    qc = pd.read_parquet(batch / "qc.parquet")
    assert sorted(qc["id"]) == ok and qc["sync_offset_frames__verdict"].eq("pass").all()
    assert not (batch / "results.partial").exists()  # merged into results.parquet, then removed


def test_journal_parts_newest_record_wins_and_a_failed_write_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts are read in run order, the newest record of each row wins; a part that cannot be written
    (storage down) keeps its records for the next try instead of raising."""
    from flows.journal import ResultsJournal, journal_records, read_journal, remove_journal
    from flows.render_batch import RESULT_SCHEMA
    from sadtalker.paths import BatchPaths

    paths = BatchPaths.create(str(tmp_path / "out"), "b1")
    first = ResultsJournal(paths, RESULT_SCHEMA, rows=2)
    for i in range(5):
        first.add({"row": i, "id": f"r{i}", "status": "succeeded", "total_s": 1.0, "_qc_metrics": {"m": 0.5}})
        first.flush_if_due()
    assert (first.parts, first.saved, first.pending) == (2, 4, 1)
    write_bytes = storage.write_bytes

    def down(uri: str, data: bytes) -> str:
        raise OSError("storage down")

    monkeypatch.setattr(storage, "write_bytes", down)
    assert not first.flush() and first.pending == 1 and "storage down" in (first.error or "")
    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    assert first.flush() and (first.parts, first.saved, first.pending, first.error) == (3, 5, 0, None)

    second = ResultsJournal(paths, RESULT_SCHEMA)  # a later run: its records win
    second.add({"row": 1, "id": "r1", "status": "failed", "error": "OSError: x", "total_s": 2.0})
    assert second.flush()
    records = {r["id"]: r for r in journal_records(read_journal(paths, RESULT_SCHEMA))}
    assert sorted(records) == [f"r{i}" for i in range(5)]
    assert (records["r1"]["status"], records["r1"]["total_s"], records["r1"]["_qc_metrics"]) == (
        "failed",
        2.0,
        None,
    )
    assert records["r0"]["_qc_metrics"] == {"m": 0.5} and records["r4"]["status"] == "succeeded"
    assert remove_journal(paths) == 4 and read_journal(paths) is None


def test_the_journal_has_the_finished_rows_of_a_killed_run(tmp_path: Path, fake_pipeline: Any) -> None:
    """A real run (subprocess, fakes through tests/fake_site) is SIGKILLed while row c hangs in its
    coefficient stage: rows a and b are in the journal (within JOURNAL_SECONDS), a rerun takes them as they
    are and runs only c."""
    manifest = make_manifest(
        tmp_path / "in",
        {"a": (b"pa", b"sa FRAMES=3"), "b": (b"pb", b"sb FRAMES=4"), "c": (b"pc", b"HANG FRAMES=6")},
    )
    out, log = tmp_path / "out", tmp_path / "calls.log"
    proc = start_run(tmp_path, manifest, out, PIPELINE_FAKES_HANG="1")
    done: set[str] = set()
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and done != {"a", "b"}:
            time.sleep(0.5)
            done = set(journaled(out).index)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    tail = (tmp_path / "run.log").read_text()[-3000:]
    assert done == {"a", "b"}, f"the journal has {done or 'nothing'}; run log: {tail}"
    assert "audio_to_coefficients c.wav" in log.read_text()  # killed while c was still running
    (batch,) = out.glob("*/results.partial")
    batch = batch.parent
    assert not (batch / "results.parquet").exists()
    journal = journal_of(batch)
    assert (journal["status"] == "succeeded").all() and dict(journal["num_frames"]) == {"a": 3, "b": 4}
    assert journal["video_uri"].map(lambda uri: Path(uri).is_file()).all()

    summary = render_batch(manifest=manifest, output=str(out), device="cpu", report=False)
    assert summary.ok and summary.resumed == 2
    assert fake_pipeline.calls("audio_to_coefficients") == ["c.wav"] == fake_pipeline.calls("render_video")
    results = pd.read_parquet(summary.results_uri)
    assert list(results["id"]) == ["a", "b", "c"] and list(results["num_frames"]) == [3, 4, 6]
