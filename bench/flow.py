"""The batch through the flow: clips per hour and the orchestration share of wall time.

1. ``example`` (fresh process, its own Prefect home): the bundled example manifest
   (manifests/example: 2 rows of 0.43 s speech, 256 px / crop) through ``render_batch`` with the real
   pipeline, Prefect's ephemeral server, the threads runner, ``workers=1`` and ``window=1`` (one row in
   flight, so that the stages' own times add up: with more, a row's render waits for the process's
   renderer while the previous row renders, and that wait is counted in its ``render_s``). ``--quick``
   cuts the rows' speech to ``seconds``. Figures: the call's wall time (the ephemeral server's start
   included) and the flow body (``BatchSummary.seconds``); the stages' own time (the sum of ``face_s +
   coeffs_s + render_s + qc_s`` over the rows of ``results.parquet``: model loading counts as stage work);
   the orchestration share = 1 - stage time / body (and / wall); clips per hour = rows / wall.
2. ``overhead`` (fresh process): ``bench/orchestration_overhead.py``'s :func:`measure` over ``rows`` rows
   whose stages are instant fakes: the fixed cost of a batch and Prefect's cost per row.
3. ``projected_share_100``: the orchestration share of a 100-clip batch of rows like the example's:
   ``(fixed + 100 x per-row overhead) / (fixed + 100 x (per-row overhead + the example's stage time per
   row))`` (target < 5 %).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PORTRAIT, peak_rss_mb, run_child, speech_wav


def run_example(params: dict[str, Any]) -> dict[str, Any]:
    """Child ``flow_example``. Params: seconds (None: the example as it is), device, dtype, weights."""
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        from tasks.settings import use_prefect_home

        use_prefect_home(tmp / "prefect")  # before Prefect is imported
        import pyarrow.parquet as pq

        from flows.render_batch import render_batch
        from manifests import EXAMPLE_ALLOWED_PREFIXES, EXAMPLE_MANIFEST

        manifest, allowed = str(EXAMPLE_MANIFEST), list(EXAMPLE_ALLOWED_PREFIXES)
        if params.get("seconds"):  # the example's rows, their speech cut to `seconds`
            from manifests.build import write_manifest

            rows = pq.read_table(EXAMPLE_MANIFEST).to_pylist()
            speech = speech_wav(tmp / "speech.wav", float(params["seconds"]))
            for row in rows:
                row["image"], row["audio"] = str(PORTRAIT), str(speech)
            manifest = str(tmp / "manifest.parquet")
            write_manifest(rows, manifest)
            allowed = [str(tmp), str(PORTRAIT.parent)]
        start = time.perf_counter()
        summary = render_batch(
            manifest=manifest,
            output=str(tmp / "out"),
            workers=1,
            window=1,  # one row in flight: the stages' own times then add up (no overlap, no lock wait)
            device=params.get("device", "cpu"),
            dtype=params.get("dtype", "float32"),
            weights=params.get("weights"),
            allowed_prefixes=allowed,
            force=True,
        )
        wall = time.perf_counter() - start
        results = pq.read_table(summary.results_uri).to_pylist()
    stage_columns = ("face_s", "coeffs_s", "render_s", "qc_s")
    per_row = [
        {"id": r.get("id"), "frames": r.get("num_frames"), **{c: r.get(c) or 0.0 for c in stage_columns}}
        for r in results
    ]
    stage_s = sum(sum(r[c] for c in stage_columns) for r in per_row)
    rows = summary.total
    return {
        "manifest": "example"
        if not params.get("seconds")
        else f"example, speech cut to {params['seconds']} s",
        "rows": rows,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "synthetic_weights": summary.synthetic_weights,
        "workers": 1,
        "window": 1,
        "wall_s": wall,
        "body_s": summary.seconds,
        "stage_s": stage_s,
        "per_row": per_row,
        "orchestration_share_body": 1 - stage_s / summary.seconds,
        "orchestration_share_wall": 1 - stage_s / wall,
        "clips_per_hour": rows / wall * 3600,
        "clips_per_hour_body": rows / summary.seconds * 3600,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_overhead(params: dict[str, Any]) -> dict[str, Any]:
    """Child ``flow_overhead`` (installs the fake pipeline in its process)."""
    from bench.orchestration_overhead import measure

    result = measure(int(params.get("rows", 20)), int(params.get("repeat", 1)), [1])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Section ``flow``. Params: seconds (quick: cut speech), rows and repeat (fake batch), device, dtype,
    weights."""
    common = {k: params.get(k) for k in ("device", "dtype", "weights", "threads")}
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        env = {"PREFECT_HOME": home}  # a Prefect home of its own (fresh SQLite database), not ~/.prefect
        example = run_child("flow_example", {**common, "seconds": params.get("seconds")}, env=env)
    share = 100 * example["orchestration_share_body"]
    print(
        f"flow example: {example['rows']} rows in {example['wall_s']:.1f} s "
        f"({example['clips_per_hour']:.3g} clips/h), orchestration {share:.1f} % of the flow body",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        overhead = run_child(
            "flow_overhead",
            {"rows": params.get("rows", 20), "repeat": params.get("repeat", 1), "threads": common["threads"]},
            env={"PREFECT_HOME": home},
        )
    row_work = example["stage_s"] / max(1, example["rows"])
    fixed, per_row = overhead["fixed_s"], max(0.0, overhead["per_row_overhead_ms"] / 1000)
    clips = 100
    share = (fixed + clips * per_row) / (fixed + clips * (per_row + row_work))
    return {
        "example": example,
        "overhead": overhead,
        "projected_share_100": share,
        "projection": f"(fixed + {clips} x per-row overhead) / (fixed + {clips} x (per-row overhead + "
        f"{row_work:.3g} s stage time per row))",
    }
