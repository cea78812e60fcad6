"""Stage 0: read and validate the manifest (every problem of every row at once)."""

from __future__ import annotations

from prefect import task

from manifests.validate import ValidationReport, validate_manifest
from sadtalker.redaction import redact
from tasks.logs import logger, redact_errors
from tasks.retry import STAGE_TASK_OPTIONS

__all__ = ["load_manifest"]


@task(
    name="load-manifest",
    **STAGE_TASK_OPTIONS,
)
@redact_errors
def load_manifest(
    manifest: str, check_files: bool = True, allowed_prefixes: list[str] | None = None
) -> ValidationReport:
    """Read the Parquet manifest at ``manifest`` and validate it (``check_files``: check inputs exist;
    ``allowed_prefixes``: where its rows may point, default the manifest's own folder tree, ``["*"]``
    anywhere; see :mod:`manifests.validate`)."""
    report = validate_manifest(manifest, check_files=check_files, allowed_prefixes=allowed_prefixes)
    log = logger()
    log.info(
        "manifest %s: %d rows, %d valid, %d invalid; allowed input prefixes: %s",
        redact(manifest),
        report.num_rows,
        len(report.rows),
        len(report.invalid),
        redact(", ".join(report.allowed_prefixes)),
    )
    if report.problems:
        log.warning("manifest problems:\n%s", report.format_problems(limit=200))
    return report
