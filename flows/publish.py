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
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sadtalker import storage, uris
from sadtalker.paths import BatchPaths
from sadtalker.qc.record import HEADLINE_METRICS
from sadtalker.redaction import redact
from sadtalker.versions import versions

__all__ = [
    "HEADLINE_METRICS",
    "artifact_key",
    "batch_record",
    "publish_artifacts",
    "round_figure",
    "write_qc_table",
    "write_report_and_index",
]


def round_figure(value: Any, digits: int = 3) -> Any:
    """``value`` rounded to ``digits`` significant figures for reading (192.82986845999972 -> 193.0);
    anything that is not a finite float passes unchanged."""
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value) or value == 0:
        return value
    return round(value, max(digits - 1 - int(math.floor(math.log10(abs(value)))), 0))


def artifact_key(manifest: str, deployment: str | None) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) that stays the same night after night:
    from the deployment's name, or from the manifest's file stem when the flow runs without one."""
    base = deployment or uris.normalize(manifest).rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    return "render-batch-" + (re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "batch")


def write_qc_table(
    uri: str,
    results: pa.Table,
    leading: Sequence[str],
    thresholds: Mapping[str, Any],
) -> int:
    """``qc.parquet`` from a batch's final results table (``flows.results.final_table``: its columns and
    ``_qc_metrics``, JSON): the rows that have a QC verdict, ``leading`` columns first, then every metric
    (``<name>``, ``<name>__verdict``) in name order, then ``thresholds`` (every threshold the batch used,
    JSON). Returns the number of rows."""
    from flows.journal import QC_METRICS

    checked = results.filter(pc.is_valid(results["qc_verdict"]))
    overrides = json.dumps(thresholds, sort_keys=True)
    # The metrics are JSON text (redacted when journaled): Arrow's JSON reader makes typed columns of them
    # without a Python object per value (NaN and Infinity included); one block, so types are unified.
    lines = "\n".join(pc.fill_null(checked[QC_METRICS], "{}").to_pylist()).encode()
    metric_table = None
    if lines:
        metric_table = pj.read_json(io.BytesIO(lines), pj.ReadOptions(block_size=len(lines) + 1))
    metric_names = sorted(metric_table.column_names) if metric_table is not None else []
    # A metric measured on the file (width, height, ...) takes the name over the render record's column of
    # the same name: a Parquet file with two columns of one name cannot be read back by pandas.
    columns = {c: checked[c] for c in leading if c not in metric_names}
    columns.update({n: metric_table[n] for n in metric_names} if metric_table is not None else {})
    columns["thresholds"] = pa.array([overrides] * checked.num_rows, pa.string())
    table = pa.table(columns)
    storage.write_parquet(uri, table)
    return table.num_rows


def batch_record(
    paths: BatchPaths,
    manifest: str,
    tally: Any,
    thresholds: Mapping[str, Any],
    overrides: Mapping[str, Any],
    qc_protocol: str | None,
    seconds: float,
    weight_report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``batch.json``: what this batch was (``tally``: the ``flows.results.BatchTally`` of its rows;
    ``thresholds``: every QC threshold used, ``threshold_overrides``: what the batch changed; ``weights``:
    official | synthetic | mixed | none, from the rows; ``weights_check``: the policy and the sets resolved
    before any row work, each file with its SHA-256). The index page lists these records."""
    return {
        "batch_id": paths.batch_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": str(redact(manifest)),
        "output": str(redact(paths.output)),
        "rows": tally.total,
        "counts": tally.counts(),
        "weights": tally.weights_kind,
        "weights_check": dict(weight_report or {}),
        "versions": versions(),
        "thresholds": dict(thresholds),
        "threshold_overrides": dict(overrides),
        "qc_protocol": qc_protocol,
        "seconds": round(seconds, 1),
        "results": str(redact(paths.results)),
        "report": str(redact(paths.report)),
    }


def write_report_and_index(paths: BatchPaths) -> tuple[str, str]:
    """``report.html`` and the prefix's ``index.html``, from what is stored (the same code as
    ``sadtalker-batch report``). Returns (report URI, index URI)."""
    from sadtalker.qc.report import build_index, build_report

    return build_report(paths.root), build_index(paths.output)


def publish_artifacts(
    key: str,
    summary: Any,
    rows: Sequence[Mapping[str, Any]],
    worst: Sequence[Mapping[str, Any]],
    manifest_problems: str,
    table_columns: Sequence[str],
    table_metrics: Sequence[str],
) -> None:
    """The Prefect artifacts of a batch: a table (``rows``: the first rows of the results, QC figures
    rounded), a markdown summary naming the ``worst`` items, and a link to the report."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    table = []
    for r in rows:
        entry = {c: round_figure(r.get(c)) for c in table_columns}
        if entry.get("error"):
            entry["error"] = str(entry["error"])[:200]
        metrics = r.get("_qc_metrics") or {}
        entry.update({m: round_figure(metrics.get(m)) for m in table_metrics})
        table.append(entry)
    more = f" (first {len(rows)} of {summary.total})" if len(rows) < summary.total else ""
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
    bad = list(worst)
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
    create_markdown_artifact(markdown=str(redact("\n".join(lines))), key=f"{key}-summary")
    if summary.report_uri:
        create_link_artifact(
            link=_browser_link(summary.report_uri),
            link_text=f"QC report {summary.batch_id}",
            key=f"{key}-report",
            description=f"render-batch {summary.batch_id}: the QC report (report.html)",
        )


def _browser_link(uri: str) -> str:
    """A link a browser can follow: ``file://`` for local paths, the URI itself otherwise."""
    if uris.is_local(uri):
        return "file://" + uris.local_path(uri)
    return uri
