"""Large manifests in the flow process: validation time, the bounded window of rows in flight, the results
journal, and the flow's peak RSS and wall time, with instant fake model stages (tests/pipeline_fakes.py).

    python bench/large_manifest.py [--validate-rows 100000] [--window-rows 100000] [--flow-rows 1000]
                                   [--workers 2] [--window N]

Each measurement runs in a fresh child process (so its peak RSS is its own) and reports:

- ``validate``: ``validate_manifest`` of an N-row manifest over 1000 photo/speech pairs, files checked
  (``LARGE_MANIFEST_PAIRS=100000``: as many distinct pairs as rows, 2 files each, up to that number);
- ``window``: the flow's row loop without Prefect: ``_run_window`` + ``_collect_row`` + the results journal
  over N rows, with a stand-in task runner whose tasks are done at once (records like the real ones, 24 QC
  metrics per row), then the final ``results.parquet`` / ``qc.parquet`` writes: what the flow process itself
  holds per row;
- ``flow``: ``render_batch`` over N rows through Prefect (ephemeral server, threads runner, ``report=False``).

RSS is sampled when 10 % and 100 % of the rows have finished; ``growth`` is the difference per row (the
records the flow keeps for its final tables, plus whatever else grows). Peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test-only fake pipeline
sys.path.insert(0, str(REPO))

_PAIRS = int(os.environ.get("LARGE_MANIFEST_PAIRS", "1000"))  # distinct photo/speech pairs on disk


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _manifest(folder: Path, rows: int) -> str:
    """``rows`` rows over ``_PAIRS`` photo/speech pairs (ids unique; the files repeat)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(rows, _PAIRS)):
        (folder / f"p{i}.png").write_bytes(f"photo {i}".encode())
        (folder / f"s{i}.wav").write_bytes(f"speech {i} FRAMES=4".encode())
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "image": [f"p{i % _PAIRS}.png" for i in range(rows)],
            "audio": [f"s{i % _PAIRS}.wav" for i in range(rows)],
        }
    )
    path = folder / "manifest.parquet"
    pq.write_table(table, path)
    return str(path)


def child_validate(rows: int, tmp: Path) -> dict[str, Any]:
    from manifests.validate import validate_manifest

    manifest = _manifest(tmp / "in", rows)
    before = _rss_mb()
    start = time.perf_counter()
    report = validate_manifest(manifest, check_files=True)
    seconds = time.perf_counter() - start
    assert len(report.rows) == rows, report.format_problems(limit=5)
    return {"seconds": seconds, "rss_before": before, "rss_after": _rss_mb(), "peak": _peak_mb()}


class _Done:
    """A finished future holding ``value`` (the part of PrefectFuture that the row loop uses)."""

    def __init__(self, value: Any):
        self.value, self.task_run_id = value, id(self)

    def wait(self, timeout: float | None = None) -> None:
        return None

    @property
    def state(self) -> Any:
        return self

    def is_completed(self) -> bool:
        return True

    def result(self, *args: Any, **kwargs: Any) -> Any:
        return self.value

    def add_done_callback(self, fn: Any) -> None:
        fn(self)


class _InstantRunner:
    """Stands in for the task runner: each task is done when submitted, with a record like the real one's."""

    def __init__(self) -> None:
        from tasks.records import StoredCoeffs, StoredFace, StoredQC, StoredRender

        self.submitted = 0
        metrics = {f"metric_{k:02d}": 0.5 + k for k in range(24)}
        metrics.update({f"metric_{k:02d}__verdict": "pass" for k in range(24)})
        item = "/o/b/items/{}/{}"
        self._make = {
            "extract-face": lambda row: StoredFace(
                row_id=row.id,
                image_sha256="a" * 64,
                key="b" * 64,
                cache_uri=f"/o/cache/face/{'b' * 64}.npz",
                uri=item.format(row.id, "face.npz"),
                num_faces=1,
                reused=False,
                seconds=0.1,
            ),
            "audio-to-coefficients": lambda row: StoredCoeffs(
                row_id=row.id,
                audio_sha256="c" * 64,
                key="d" * 64,
                cache_uri=f"/o/cache/coeffs/{'d' * 64}.npz",
                uri=item.format(row.id, "coeffs.npz"),
                num_frames=4,
                audio_seconds=0.16,
                reused=False,
                seconds=0.1,
            ),
            "render-video": lambda row: StoredRender(
                row_id=row.id,
                key="e" * 64,
                video_uri=item.format(row.id, "video.mp4"),
                record_uri=item.format(row.id, "render.json"),
                num_frames=4,
                duration=0.16,
                width=256,
                height=256,
                synthetic_weights=True,
                device="cpu",
                reused=False,
                seconds=0.2,
                wait_seconds=0.0,
                seconds_per_frame=0.05,
                weights_label="synthetic:seed0:ffffffffffff+eeeeeeeeeeee",
            ),
            "quality-control": lambda row: StoredQC(
                row_id=row.id,
                uri=item.format(row.id, "qc.json"),
                verdict="pass",
                problems=(),
                protocol="sadtalker-qc/2",
                video_bytes=1234,
                reused=False,
                seconds=0.1,
                metrics=dict(metrics),
            ),
        }

    def submit(self, task: Any, parameters: dict[str, Any]) -> _Done:
        self.submitted += 1
        return _Done(self._make[task.name](parameters["row"]))


def child_window(rows: int, tmp: Path, window: int) -> dict[str, Any]:
    """The flow's row loop (window, collection, journal, final tables) over ``rows`` rows, without Prefect."""
    import flows.render_batch as rb
    from flows.journal import ResultsJournal, row_fingerprint
    from flows.publish import write_qc_table
    from flows.results import QC_COLUMNS, BatchTally
    from manifests.schema import ManifestRow
    from sadtalker.paths import BatchPaths
    from tasks.records import StageContext

    paths = BatchPaths.create(str(tmp / "out"), "b1")
    ctx = StageContext(paths=paths, device="cpu")
    manifest_rows = [
        ManifestRow(id=f"r{i}", image=f"/in/p{i % _PAIRS}.png", audio=f"/in/s{i}.wav") for i in range(rows)
    ]
    numbers = {row.id: i for i, row in enumerate(manifest_rows)}
    runner, journal, tally = _InstantRunner(), ResultsJournal(paths, rb.RESULT_SCHEMA), BatchTally()
    samples: dict[str, float] = {"start": _rss_mb()}
    start = time.perf_counter()
    for done in rb._run_window(runner, iter(manifest_rows), numbers, ctx, window, journal.due_in):
        if done is not None:
            _, row, result = done
            tally.add(result)
            journal.add(result, row_fingerprint("s", row))
            if tally.total == max(rows // 10, 1):
                samples["rss_10"] = _rss_mb()
        journal.flush_if_due()
    journal.flush()
    loop = time.perf_counter() - start
    samples["rss_100"] = _rss_mb()
    start = time.perf_counter()
    checked = SimpleNamespace(row_numbers=numbers, invalid=())
    table = rb._write_results(paths, journal, checked, set())
    write_qc_table(paths.qc, table, QC_COLUMNS, {})
    samples["final_rows"] = table.num_rows
    final = time.perf_counter() - start
    return {
        "loop_seconds": loop,
        "final_seconds": final,
        "submitted": runner.submitted,
        "journal_parts": journal.parts,
        "peak": _peak_mb(),
        **samples,
    }


def child_flow(rows: int, tmp: Path, workers: int, window: int | None) -> dict[str, Any]:
    import pipeline_fakes

    import flows  # noqa: F401  (offline Prefect settings before Prefect is imported)

    pipeline_fakes.install()
    import flows.render_batch as rb
    from flows.journal import ResultsJournal

    manifest = _manifest(tmp / "in", rows)
    samples: dict[str, float] = {}
    added = {"n": 0}
    original_add = ResultsJournal.add

    def add(self: Any, record: Any, fingerprint: Any = None) -> None:
        original_add(self, record, fingerprint)
        added["n"] += 1
        if added["n"] == max(rows // 10, 1):
            samples["rss_10"] = _rss_mb()
        if added["n"] == rows:
            samples["rss_100"] = _rss_mb()

    ResultsJournal.add = add  # type: ignore[method-assign]
    samples["start"] = _rss_mb()
    start = time.perf_counter()
    summary = rb.render_batch(
        manifest=manifest, output=str(tmp / "out"), workers=workers, window=window, device="cpu", report=False
    )
    wall = time.perf_counter() - start
    assert summary.ok and summary.total == rows, summary.failures[:3]
    return {"wall": wall, "body": summary.seconds, "peak": _peak_mb(), **samples}


def _child(kind: str, rows: int, **options: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--rows", str(rows)]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key}", str(value)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{kind} {rows} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _growth(r: dict[str, Any], rows: int) -> str:
    if "rss_10" not in r or "rss_100" not in r or rows < 10:
        return "-"
    return f"{(r['rss_100'] - r['rss_10']) * 1024 * 1024 / (rows - max(rows // 10, 1)):.0f} B/row"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validate-rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--window-rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--flow-rows", type=int, nargs="*", default=[1000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=int, default=None, help="default: the flow's (2 per worker)")
    parser.add_argument("--child", choices=("validate", "window", "flow"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="large-manifest-") as tmp:
            if args.child == "validate":
                out = child_validate(args.rows, Path(tmp))
            elif args.child == "window":
                out = child_window(args.rows, Path(tmp), args.window or 2 * args.workers)
            else:
                out = child_flow(args.rows, Path(tmp), args.workers, args.window)
        print(json.dumps(out))
        return 0

    print(f"machine: {os.cpu_count()} CPU cores; workers={args.workers}, window={args.window or 'default'}\n")
    print("| measurement | rows | time | per row | RSS start -> end MB | growth | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for rows in args.validate_rows:
        r = _child("validate", rows)
        print(
            f"| validate_manifest (files checked) | {rows} | {r['seconds']:.1f} s | "
            f"{r['seconds'] / rows * 1e6:.0f} us | {r['rss_before']:.0f} -> {r['rss_after']:.0f} | - | "
            f"{r['peak']:.0f} |"
        )
    for rows in args.window_rows:
        r = _child("window", rows, workers=args.workers, window=args.window)
        print(
            f"| row loop + journal, no Prefect ({r['submitted']} tasks, {r['journal_parts']} parts) | "
            f"{rows} | "
            f"{r['loop_seconds']:.1f} s (+{r['final_seconds']:.1f} s final tables) | "
            f"{r['loop_seconds'] / rows * 1e6:.0f} us | {r['start']:.0f} -> {r['rss_100']:.0f} | "
            f"{_growth(r, rows)} | {r['peak']:.0f} |"
        )
    for rows in args.flow_rows:
        r = _child("flow", rows, workers=args.workers, window=args.window)
        print(
            f"| render_batch through Prefect (body {r['body']:.1f} s) | {rows} | {r['wall']:.1f} s | "
            f"{r['body'] / rows * 1000:.0f} ms | {r['start']:.0f} -> {r.get('rss_100', float('nan')):.0f} | "
            f"{_growth(r, rows)} | {r['peak']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
