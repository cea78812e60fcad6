"""What Prefect orchestration costs per task: ``render_batch`` over N rows whose model stages are instant
fakes (tests/pipeline_fakes.py) against calling the same task bodies directly (``task.fn``, same storage
I/O and hashing, no Prefect).

    python bench/orchestration_overhead.py [--rows 20] [--repeat 3] [--workers 1 2 4]

Runs on Prefect's ephemeral server (its start-up is excluded: one warm-up batch first). Reports, as a
markdown table, medians of:

- ``direct``: the four stage bodies of every row, called one after another in this process;
- ``flow, 0 rows``: the fixed cost of a batch (validation task, artifacts, results.parquet);
- ``flow, workers=W`` for each ``--workers`` value: the whole batch of N rows (W rows in flight);

each flow as its wall time and as its body (the flow function itself, ``BatchSummary.seconds``: the
difference is the flow run's own start and end, e.g. joining its heartbeat thread, up to about 1 s), and
the per-task overhead ``(body(N, workers=1) - body(0 rows) - direct(N)) / (4 N)`` in milliseconds.
``python bench/run.py --only flow`` runs :func:`measure` (in a process of its own) next to a real batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _install_fakes() -> None:
    """The test-only instant pipeline (tests/pipeline_fakes.py) in place of ``sadtalker.pipeline`` and
    ``sadtalker.loader``, in this process: call only in a process of its own (``bench/run.py`` runs this
    measurement in a child)."""
    for path in (str(REPO), str(REPO / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import pipeline_fakes

    import flows  # noqa: F401  (offline Prefect settings before Prefect is imported)

    pipeline_fakes.install()


def _manifest(folder: Path, rows: int) -> str:
    from manifests.build import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        (folder / f"r{i}.png").write_bytes(f"photo {i}".encode())
        (folder / f"r{i}.wav").write_bytes(f"speech {i} FRAMES=4".encode())
        records.append({"id": f"r{i}", "image": f"r{i}.png", "audio": f"r{i}.wav"})
    path = folder / "manifest.parquet"
    if records:
        write_manifest(records, str(path))
    else:  # an empty manifest (the fixed cost of a batch)
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("image", pa.string()), ("audio", pa.string())])
        pq.write_table(pa.Table.from_pylist([], schema=schema), path)
    return str(path)


def _direct(manifest: str, output: str) -> float:
    from manifests.validate import validate_manifest
    from sadtalker.paths import BatchPaths
    from tasks.coeffs import coefficients_task
    from tasks.face import extract_face_task
    from tasks.qc import qc_task
    from tasks.records import StageContext
    from tasks.render import render_task

    report = validate_manifest(manifest)
    ctx = StageContext(paths=BatchPaths.create(output, "direct"), device="cpu")
    start = time.perf_counter()
    for row in report.rows:
        face = extract_face_task.fn(row, ctx)
        coeffs = coefficients_task.fn(row, face, ctx)
        render = render_task.fn(row, face, coeffs, ctx)
        qc_task.fn(row, face, render, coeffs, ctx)
    return time.perf_counter() - start


def _flow(manifest: str, output: str, workers: int) -> tuple[float, float]:
    """(wall time of the flow call, time of the flow body)."""
    from flows.render_batch import render_batch

    start = time.perf_counter()
    summary = render_batch(manifest=manifest, output=output, workers=workers, device="cpu", force=True)
    elapsed = time.perf_counter() - start
    assert summary.failed == 0, summary.failures
    return elapsed, summary.seconds


def measure(rows: int = 20, repeat: int = 3, workers: list[int] | None = None) -> dict[str, Any]:
    """The figures of this script's table as a dict (installs the fakes: run it in a process of its own).

    Returns ``direct_s``, ``flow_wall_s`` / ``flow_body_s`` (``{"0": empty batch, "W": N rows with W
    workers}``), ``per_task_overhead_ms``, ``per_row_overhead_ms`` (workers=1) and ``fixed_s`` (the flow
    body of an empty batch)."""
    workers = list(workers or [1])
    if 1 not in workers:
        workers.insert(0, 1)
    _install_fakes()
    with tempfile.TemporaryDirectory(prefix="orchestration-bench-") as tmp:
        root = Path(tmp)
        full, empty = _manifest(root / "full", rows), _manifest(root / "empty", 0)
        _flow(full, str(root / "warmup"), max(workers))  # starts the ephemeral server, imports everything
        direct: list[float] = []
        flows_: dict[int, list[tuple[float, float]]] = {w: [] for w in [0, *workers]}
        for i in range(repeat):
            direct.append(_direct(full, str(root / f"direct{i}")))  # fresh output: nothing cached
            flows_[0].append(_flow(empty, str(root / f"e{i}"), 1))
            for w in workers:
                flows_[w].append(_flow(full, str(root / f"w{w}-{i}"), w))
    d = statistics.median(direct)
    wall = {w: statistics.median(r[0] for r in runs) for w, runs in flows_.items()}
    body = {w: statistics.median(r[1] for r in runs) for w, runs in flows_.items()}
    tasks = 4 * rows
    return {
        "rows": rows,
        "repeat": repeat,
        "workers": workers,
        "direct_s": d,
        "flow_wall_s": {str(w): v for w, v in wall.items()},
        "flow_body_s": {str(w): v for w, v in body.items()},
        "fixed_s": body[0],
        "per_task_overhead_ms": (body[1] - body[0] - d) / tasks * 1000,
        "per_row_overhead_ms": (body[1] - body[0] - d) / rows * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="rows in flight (threads)")
    args = parser.parse_args()
    m = measure(args.rows, args.repeat, args.workers)
    rows, d, wall, body = m["rows"], m["direct_s"], m["flow_wall_s"], m["flow_body_s"]
    head = f"{rows} rows x 4 tasks, instant fake stages, median of {args.repeat}"
    print(f"\norchestration overhead: {head}")
    print(f"machine: {os.cpu_count()} CPU cores, Prefect ephemeral server, local storage, threads runner\n")
    print("| run | wall s | flow body s | body per row ms |")
    print("|---|---:|---:|---:|")
    print(f"| direct (task bodies, no Prefect) | {d:.2f} | - | {d / rows * 1000:.0f} |")
    print(f"| flow, 0 rows (fixed cost of a batch) | {wall['0']:.2f} | {body['0']:.2f} | - |")
    for w in m["workers"]:
        w = str(w)
        print(f"| flow, workers={w} | {wall[w]:.2f} | {body[w]:.2f} | {body[w] / rows * 1000:.0f} |")
    formula = f"(body - body(0 rows) - direct) / {4 * rows} tasks"
    print(f"\nper-task overhead (workers=1): {m['per_task_overhead_ms']:.1f} ms = {formula}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
