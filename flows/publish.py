"""What a finished batch leaves for its reviewers: the tables, the batch record, the report and the
Prefect artifacts.

Files (layout: ``sadtalker.paths.BatchPaths``): ``results.parquet`` (one row per manifest row),
``qc.parquet`` (one row per row that has a video, every QC metric a column), ``batch.json`` (what the batch
was), ``report.html`` (``sadtalker.qc.report``) and the output prefix's ``index.html`` (every batch).
Artifacts: a table with the QC figures rounded for reading, a markdown summary naming the worst items, and
a link to the report. Their keys come from the deployment's name (or the manifest's stem for a local run),
not from the batch id, so Prefect's Artifacts page shows one history per nightly deployment.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sadtalker import storage
from sadtalker.paths import BatchPaths

__all__ = [
    "HEADLINE_METRICS",
    "artifact_key",
    "batch_record",
    "publish_artifacts",
    "round_figure",
    "versions",
    "write_parquet",
    "write_qc_table",
    "write_report_and_index",
]

_VERDICT_ORDER = {"fail": 0, "warn": 1, "pass": 2}
#: The QC figures a reviewer reads first: the Prefect table artifact and ``results --qc`` show these
#: (qc.parquet and the report have every metric).
HEADLINE_METRICS = (
    "identity_similarity",
    "face_presence",
    "sync_correlation",
    "sync_offset_frames",
    "sharpness_ratio",
    "longest_frozen_run",
    "av_drift_frames",
)


def round_figure(value: Any, digits: int = 3) -> Any:
    """``value`` rounded to ``digits`` significant figures for reading (192.82986845999972 -> 193.0);
    anything that is not a finite float passes unchanged."""
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value) or value == 0:
        return value
    return round(value, max(digits - 1 - int(math.floor(math.log10(abs(value)))), 0))


def versions() -> dict[str, str]:
    """Versions of what produced a batch: this project, Python and the libraries that shape its numbers."""
    import platform

    found = {"sadtalker-batch": _version("sadtalker-batch"), "python": platform.python_version()}
    for package in ("torch", "numpy", "opencv-python", "librosa", "dlib-bin", "face-alignment", "prefect"):
        found[package] = _version(package)
    return found


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def artifact_key(manifest: str, deployment: str | None) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) that stays the same night after night:
    from the deployment's name, or from the manifest's file stem when the flow runs without one."""
    base = deployment or storage.normalize(manifest).rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    return "render-batch-" + (re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "batch")


def write_parquet(uri: str, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> None:
    """``rows`` (redacted) as Parquet with ``schema``, written atomically to ``uri``."""
    table = pa.Table.from_pylist(
        [storage.redact({c: r.get(c) for c in schema.names}) for r in rows], schema=schema
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue())


def write_qc_table(
    uri: str,
    rows: Sequence[Mapping[str, Any]],
    leading: Sequence[str],
    schema: pa.Schema,
    thresholds: Mapping[str, Any],
) -> int:
    """``qc.parquet``: the rows that have a QC verdict, ``leading`` columns first (typed by ``schema`` where
    it names them), then every metric (``<name>``, ``<name>__verdict``) in name order, then ``thresholds``
    (every threshold the batch used, JSON). Returns the number of rows."""
    checked = [r for r in rows if r.get("qc_verdict") is not None]
    metric_names = sorted({name for r in checked for name in (r.get("_qc_metrics") or {})})
    # A metric measured on the file (width, height, ...) takes the name over the render record's column of
    # the same name: a Parquet file with two columns of one name cannot be read back by pandas.
    leading = [c for c in leading if c not in metric_names]
    overrides = json.dumps(thresholds, sort_keys=True)
    fields = [schema.field(c) if c in schema.names else pa.field(c, pa.string()) for c in leading]
    table_rows = []
    for r in checked:
        out = {c: r.get(c) for c in leading}
        out.update({name: (r.get("_qc_metrics") or {}).get(name) for name in metric_names})
        out["thresholds"] = overrides
        table_rows.append(storage.redact(out))
    metric_table = pa.Table.from_pylist([{n: row[n] for n in metric_names} for row in table_rows] or [{}])
    if not table_rows:
        metric_table = metric_table.slice(0, 0)
    fields += [metric_table.schema.field(n) for n in metric_names]
    fields.append(pa.field("thresholds", pa.string()))
    table = pa.Table.from_pylist(table_rows, schema=pa.schema(fields))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue())
    return len(table_rows)


def batch_record(
    paths: BatchPaths,
    manifest: str,
    rows: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Any],
    overrides: Mapping[str, Any],
    qc_protocol: str | None,
    seconds: float,
    weight_report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``batch.json``: what this batch was (``thresholds``: every QC threshold used, ``threshold_overrides``:
    what the batch changed; ``weights``: official | synthetic | mixed | none, from the rows;
    ``weights_check``: the policy and the sets resolved before any row work, each file with its SHA-256).
    The index page lists these records."""
    counts = {
        "succeeded": sum(1 for r in rows if r.get("status") == "succeeded"),
        "failed": sum(1 for r in rows if r.get("status") == "failed"),
        "invalid": sum(1 for r in rows if r.get("failed_stage") == "validate"),
    }
    for verdict in ("pass", "warn", "fail"):
        counts[f"qc_{verdict}"] = sum(1 for r in rows if r.get("qc_verdict") == verdict)
    synthetic = {bool(r["synthetic_weights"]) for r in rows if r.get("synthetic_weights") is not None}
    weights = {frozenset(): "none", frozenset({True}): "synthetic", frozenset({False}): "official"}.get(
        frozenset(synthetic), "mixed"
    )
    return {
        "batch_id": paths.batch_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": str(storage.redact(manifest)),
        "output": str(storage.redact(paths.output)),
        "rows": len(rows),
        "counts": counts,
        "weights": weights,
        "weights_check": dict(weight_report or {}),
        "versions": versions(),
        "thresholds": dict(thresholds),
        "threshold_overrides": dict(overrides),
        "qc_protocol": qc_protocol,
        "seconds": round(seconds, 1),
        "results": str(storage.redact(paths.results)),
        "report": str(storage.redact(paths.report)),
    }


def write_report_and_index(paths: BatchPaths) -> tuple[str, str]:
    """``report.html`` and the prefix's ``index.html``, from what is stored (the same code as
    ``sadtalker-batch report``). Returns (report URI, index URI)."""
    from sadtalker.qc.report import build_index, build_report

    return build_report(paths.root), build_index(paths.output)


def _worst(rows: Iterable[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """Run failures, then QC failures, then warnings, in manifest order within each group."""

    def rank(r: Mapping[str, Any]) -> tuple[int, int]:
        if r.get("status") == "failed" and r.get("failed_stage") != "qc":
            return (0, int(r.get("row") or 0))
        return (1 + _VERDICT_ORDER.get(str(r.get("qc_verdict")), 3), int(r.get("row") or 0))

    bad = [r for r in rows if r.get("status") == "failed" or r.get("qc_verdict") in ("fail", "warn")]
    return sorted(bad, key=rank)[:limit]


def publish_artifacts(
    key: str,
    summary: Any,
    rows: Sequence[Mapping[str, Any]],
    manifest_problems: str,
    table_columns: Sequence[str],
    table_metrics: Sequence[str],
    max_rows: int = 1000,
    worst: int = 10,
) -> None:
    """The Prefect artifacts of a batch: a table (one row per manifest row, QC figures rounded), a markdown
    summary naming the worst items, and a link to the report."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    table = []
    for r in rows[:max_rows]:
        entry = {c: round_figure(r.get(c)) for c in table_columns}
        if entry.get("error"):
            entry["error"] = str(entry["error"])[:200]
        metrics = r.get("_qc_metrics") or {}
        entry.update({m: round_figure(metrics.get(m)) for m in table_metrics})
        table.append(entry)
    more = f" (first {max_rows} of {len(rows)})" if len(rows) > max_rows else ""
    create_table_artifact(table=table, key=key, description=f"render-batch {summary.batch_id}: QC{more}")

    lines = [
        f"# render-batch `{summary.batch_id}`",
        "",
        f"- rows: **{summary.total}**: succeeded **{summary.succeeded}**, failed **{summary.failed}**"
        f" (QC fail {summary.qc_fail}, invalid in the manifest {summary.invalid}); QC pass {summary.qc_pass},"
        f" warn {summary.qc_warn}; reused from an earlier run: {summary.reused}",
        f"- report: `{summary.report_uri}`",
        f"- results: `{summary.results_uri}`",
        f"- wall time: {summary.seconds:.1f} s",
    ]
    if summary.synthetic_weights:
        lines.append("- **WARNING: rendered with SYNTHETIC weights: these videos are not real results.**")
    bad = _worst(rows, worst)
    if bad:
        lines += [
            "",
            f"## Worst items ({len(bad)} shown)",
            "",
            "| id | status | QC | why |",
            "|---|---|---|---|",
        ]
        for r in bad:
            why = r.get("error") or r.get("qc_problems") or ""
            why = str(why)[:200].replace("|", "/").replace("\n", " ")
            lines.append(f"| {r.get('id')} | {r.get('status')} | {r.get('qc_verdict') or '-'} | {why} |")
    if manifest_problems:
        lines += ["", "Manifest problems:", "", "```", manifest_problems, "```"]
    create_markdown_artifact(markdown=str(storage.redact("\n".join(lines))), key=f"{key}-summary")
    if summary.report_uri:
        create_link_artifact(
            link=_browser_link(summary.report_uri),
            link_text=f"QC report {summary.batch_id}",
            key=f"{key}-report",
            description=f"render-batch {summary.batch_id}: the QC report (report.html)",
        )


def _browser_link(uri: str) -> str:
    """A link a browser can follow: ``file://`` for local paths, the URI itself otherwise."""
    if storage.is_local(uri):
        return "file://" + storage.local_path(uri)
    return uri
