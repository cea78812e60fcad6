"""The ``sadtalker-batch`` command (also ``python -m flows.cli``).

```
run MANIFEST --output PREFIX [--cache C] [--batch-id ID] [--strict] [--force] [--window N]
    [--runner threads|dask] [--dask-address tcp://host:8786] [--workers N] [--device auto|cpu|cuda]
    [--qc-threshold METRIC.warn|fail=VALUE ...] [--no-report] [--allow-prefix PREFIX ... | --allow-any-path]
submit MANIFEST --output PREFIX [--deployment FLOW/DEPLOYMENT] [--wait] [--qc-threshold ...]
    [--allow-prefix PREFIX ... | --allow-any-path]
validate MANIFEST [--no-check-files] [--allow-prefix PREFIX ... | --allow-any-path]
results OUTPUT/BATCH_ID [--failed] [--qc]   (or the path of a results.parquet)
report OUTPUT/BATCH_ID | --index OUTPUT
build-manifest SOURCE -o OUT.parquet [--set KEY=VALUE ...]
render ... / weights ... / qc ...  (the model-only ``sadtalker`` command's)
--version
```

Rows may name files only under the allowed input prefixes: by default the manifest's own folder tree;
``--allow-prefix`` (repeatable) replaces it, ``--allow-any-path`` lifts it (one-machine use only).

Exit codes: 0 every row succeeded (or the manifest is valid); 1 some rows failed, QC failures included
(invalid manifest for ``validate``; a failed flow run for ``submit --wait``); 2 the batch could not run
(unreadable manifest, ``--strict`` with problems, bad arguments); 3 (``run``) the batch ran but its results
were not all written (storage down at the end): the message says what the results journal saved; 4
(``run``) the batch stopped before every row ran because the storage or network was down (rows kept failing
with transient faults after their retries); 128 + N (``run``) a graceful stop on signal N (143 for SIGTERM,
130 for Ctrl-C): no new row started, the rows in flight finished and were journaled, a second signal stops
at once. After 3, 4 or 128 + N, rerunning the same command finishes the batch.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import typer

import flows  # noqa: F401  (offline Prefect settings before Prefect is imported)
from flows.submit import DEFAULT_DEPLOYMENT
from sadtalker import cli as model_cli
from sadtalker import storage, uris
from sadtalker.cli import TimeoutOption, WeightsPolicyOption
from sadtalker.cli_base import new_app, run_app
from sadtalker.options import DType, RenderOptions, WeightsPolicy
from sadtalker.redaction import redact

__all__ = ["app", "main"]

_SHOWN_COLUMNS = [
    "row",
    "id",
    "status",
    "failed_stage",
    "num_frames",
    "qc_verdict",
    "render_reused",
    "total_s",
    "error",
]

app = new_app("Batch talking-head videos: one per row of a Parquet manifest, on Prefect.")

# ------------------------------------------------------------------------------ options of the commands

ManifestArgument = Annotated[
    str, typer.Argument(help="Parquet manifest (path or fsspec URL: file://, s3://, ...).")
]
NoCheckFilesOption = Annotated[
    bool, typer.Option("--no-check-files", help="Do not check that the input files exist first.")
]
QcThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--qc-threshold",
        metavar="METRIC.LEVEL=VALUE",
        help="Override a QC threshold for this batch, e.g. identity_similarity.fail=0.5 (repeatable; "
        "metrics and defaults: docs/qc.md).",
    ),
]
AllowPrefixOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-prefix",
        metavar="PREFIX",
        help="Rows may name files only under PREFIX (a folder, or a URL such as s3://bucket/media/); "
        "repeatable; replaces the default, the manifest's own folder tree.",
    ),
]
AllowAnyPathOption = Annotated[
    bool,
    typer.Option(
        "--allow-any-path",
        help="Rows may name any file this machine can read (one-machine use only; flow parameter "
        "allowed_prefixes=['*']).",
    ),
]


def _allowed_prefixes(allow_prefix: list[str] | None, allow_any_path: bool) -> list[str] | None:
    """The ``allowed_prefixes`` that ``--allow-prefix`` / ``--allow-any-path`` ask for: ``["*"]``, the
    prefixes, or None (the default: the manifest's own folder tree)."""
    from sadtalker.inputs import ANY_PATH

    if allow_prefix and allow_any_path:
        raise typer.BadParameter("give one of them, not both", param_hint="--allow-prefix / --allow-any-path")
    if any(not prefix.strip() for prefix in allow_prefix or []):
        raise typer.BadParameter("an empty prefix", param_hint="--allow-prefix")
    if allow_any_path:
        return [ANY_PATH]
    return list(allow_prefix) if allow_prefix else None


def _thresholds(values: list[str] | None) -> dict[str, dict[str, float]] | None:
    from sadtalker.qc import parse_threshold_overrides

    try:
        return parse_threshold_overrides(values or []) or None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--qc-threshold") from exc


def _timeouts(values: list[str] | None) -> dict[str, float] | None:
    from sadtalker.timeouts import StageTimeouts

    try:
        return StageTimeouts.parse_items(values or []) or None  # a bad name: exit 2, before any work
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from exc


# ------------------------------------------------------------------------------------------ the commands


@app.command("run")
def run_command(
    manifest: ManifestArgument,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Output prefix; the batch goes to OUTPUT/BATCH_ID.")
    ],
    cache: Annotated[
        str | None, typer.Option(help="Shared stage cache prefix (default: OUTPUT/cache).")
    ] = None,
    batch_id: Annotated[
        str | None, typer.Option(help="Default: manifest stem + 12 hex digits of its hash (reruns resume).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Any manifest problem fails the whole batch.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute every stage, even when cached.")] = False,
    runner: Annotated[Literal["threads", "dask"], typer.Option(help="Where rows run.")] = "threads",
    dask_address: Annotated[
        str | None, typer.Option(help="Scheduler of an existing Dask cluster (implies --runner dask).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Rows in flight (threads) or Dask worker processes.")
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="At most this many rows submitted at once (default: 2 per worker).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:<i>.")] = "auto",
    dtype: Annotated[DType, typer.Option(help=RenderOptions.model_fields["dtype"].description)] = "float32",
    compile: Annotated[
        bool, typer.Option("--compile", help=RenderOptions.model_fields["compile"].description)
    ] = False,
    no_check_files: NoCheckFilesOption = False,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Do not write report.html / index.html.")
    ] = False,
    qc_threshold: QcThresholdOption = None,
    weights: WeightsPolicyOption = None,
    allow_prefix: AllowPrefixOption = None,
    allow_any_path: AllowAnyPathOption = False,
    timeout: TimeoutOption = None,
) -> None:
    """Render one video per manifest row (exit 1 when a row failed)."""
    prefixes = _allowed_prefixes(allow_prefix, allow_any_path)
    thresholds, timeouts = _thresholds(qc_threshold), _timeouts(timeout)

    from flows.render_batch import BatchStopped, ResultsNotSavedError, render_batch

    try:
        summary = render_batch(
            manifest=manifest,
            output=output,
            cache=cache,
            batch_id=batch_id,
            strict=strict,
            force=force,
            runner="dask" if dask_address else runner,
            dask_address=dask_address,
            workers=workers,
            window=window,
            device=device,
            dtype=dtype,
            compile=compile,
            check_files=not no_check_files,
            qc_thresholds=thresholds,
            report=not no_report,
            weights=weights,
            allowed_prefixes=prefixes,
            timeouts=timeouts,
        )
    except BatchStopped as exc:  # SIGTERM / Ctrl-C, or the storage breaker: what ran, what is saved
        if exc.summary is not None:
            _print_counts(exc.summary)
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(128 + exc.signum if exc.signum else 4) from None
    except ResultsNotSavedError as exc:  # it ran: say what is saved (the journal) and what is not
        if exc.summary is not None:
            _print_counts(exc.summary)
        print(f"error: the batch ran, but its results were not all written: {exc}", file=sys.stderr)
        raise typer.Exit(3) from None
    except Exception as exc:
        print(f"error: the batch did not run: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        raise typer.Exit(2) from None
    _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


@app.command("submit")
def submit_command(
    manifest: Annotated[
        str, typer.Argument(help="Parquet manifest the workers can read (s3://..., or a shared path).")
    ],
    output: Annotated[str, typer.Option("-o", "--output", help="Output prefix the workers write to.")],
    deployment: Annotated[str, typer.Option(help="The deployment, FLOW/NAME.")] = DEFAULT_DEPLOYMENT,
    batch_id: Annotated[
        str | None, typer.Option(help="Default: manifest stem + 12 hex digits of its hash.")
    ] = None,
    cache: Annotated[
        str | None, typer.Option(help="Shared stage cache prefix (default: OUTPUT/cache).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda (default: the deployment's).")] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help=RenderOptions.model_fields["compile"].description + " Default: the deployment's.",
        ),
    ] = None,
    weights: Annotated[
        WeightsPolicy | None,
        typer.Option(
            help="Weights policy of this run (default: the deployment's; the nightly one uses official)."
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run and print where the report is.")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between state checks (--wait).")] = 2.0,
    wait_timeout: Annotated[
        float | None, typer.Option(help="With --wait: stop following after this many seconds.")
    ] = None,
    allow_invalid: Annotated[
        bool, typer.Option("--allow-invalid", help="Send even when rows are invalid.")
    ] = False,
    no_check_files: NoCheckFilesOption = False,
    qc_threshold: QcThresholdOption = None,
    allow_prefix: AllowPrefixOption = None,
    allow_any_path: AllowAnyPathOption = False,
    timeout: TimeoutOption = None,
) -> None:
    """Validate locally, then run the batch on a shared Prefect server's deployment (flows.submit)."""
    from flows.submit import submit as submit_batch

    raise typer.Exit(
        submit_batch(
            manifest,
            output,
            deployment=deployment,
            batch_id=batch_id,
            cache=cache,
            device=device,
            compile=compile,
            weights=weights,
            qc_thresholds=_thresholds(qc_threshold),
            allowed_prefixes=_allowed_prefixes(allow_prefix, allow_any_path),
            timeouts=_timeouts(
                timeout
            ),  # the stages' time limits of this run (the deployment's when not given)
            check_files=not no_check_files,
            allow_invalid=allow_invalid,
            wait=wait,
            poll=poll,
            wait_timeout=wait_timeout,
        )
    )


@app.command("validate")
def validate_command(
    manifest: ManifestArgument,
    no_check_files: NoCheckFilesOption = False,
    allow_prefix: AllowPrefixOption = None,
    allow_any_path: AllowAnyPathOption = False,
) -> None:
    """Report every problem of every row (exit 1 when there is one); rows may name files only under the
    allowed prefixes (default: the manifest's own folder tree)."""
    from manifests.validate import validate_manifest
    from sadtalker.errors import InputError

    prefixes = _allowed_prefixes(allow_prefix, allow_any_path)
    try:
        report = validate_manifest(manifest, check_files=not no_check_files, allowed_prefixes=prefixes)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"{report.num_rows} rows, {len(report.rows)} valid, {len(report.invalid)} invalid")
    if report.problems:
        print(report.format_problems())
    raise typer.Exit(0 if report.ok else 1)


@app.command("results")
def results_command(
    batch: Annotated[str, typer.Argument(help="OUTPUT/BATCH_ID (the batch folder) or a results.parquet.")],
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed rows.")] = False,
    all_columns: Annotated[
        bool, typer.Option("--all-columns", help="Every column, one row per block.")
    ] = False,
    qc: Annotated[
        bool, typer.Option("--qc", help="The QC figures (qc.parquet) instead of the stages.")
    ] = False,
) -> None:
    """Show a batch's results table (--qc: its QC figures)."""
    try:
        frame, uri = _read_results(batch)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read results: {redact(str(exc))}", file=sys.stderr)
        raise typer.Exit(2) from None
    shown = frame[frame["status"] == "failed"] if failed else frame
    if qc:
        raise typer.Exit(_show_qc(uri, set(shown["id"])))
    if all_columns:
        for _, row in shown.iterrows():
            print(row.to_string(), end="\n\n")
    else:
        table = shown[_SHOWN_COLUMNS].astype(object)
        table = table.where(table.notna(), "-")
        table["error"] = table["error"].astype(str).str.slice(0, 80)
        print(table.to_string(index=False))
    counts = frame["status"].value_counts().to_dict()
    print(f"\n{redact(uri)}: {len(frame)} rows, " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


@app.command("report")
def report_command(
    batch: Annotated[
        str | None, typer.Argument(help="OUTPUT/BATCH_ID (folder or URI) whose report to rebuild.")
    ] = None,
    index: Annotated[
        str | None,
        typer.Option("--index", metavar="OUTPUT", help="Rebuild OUTPUT/index.html (every batch under it)."),
    ] = None,
) -> None:
    """Rebuild a batch's report.html, or the index.html of every batch under OUTPUT."""
    if bool(batch) == bool(index):
        raise typer.BadParameter(
            "give a batch folder or --index OUTPUT (one of them)", param_hint="BATCH / --index"
        )
    from sadtalker.qc.report import build_index, build_report

    try:
        uri = build_index(index) if index else build_report(batch)
    except (OSError, ValueError) as exc:
        print(f"error: cannot build the report: {redact(str(exc))}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"wrote {redact(uri)}")


@app.command("build-manifest")
def build_manifest_command(
    source: Annotated[
        str, typer.Argument(help="A .csv, a .json list of objects, or a folder of same-stem pairs.")
    ],
    output: Annotated[
        str, typer.Option("-o", "--output", help="The Parquet manifest to write (path or URL).")
    ],
    source_format: Annotated[
        Literal["csv", "json", "folder"] | None, typer.Option("--format", help="Default: from the suffix.")
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="A column value for rows without one (repeatable)."),
    ] = None,
    no_check_files: NoCheckFilesOption = False,
) -> None:
    """Build a manifest from a CSV, a JSON list or a folder of same-stem pairs (exit 1 when it is invalid)."""
    from manifests.build import ManifestBuildError, build_manifest, parse_cell

    defaults: dict[str, Any] = {}
    for item in set_values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"needs KEY=VALUE, got {item!r}", param_hint="--set")
        defaults[key.strip()] = parse_cell(key.strip(), value)
    try:
        report = build_manifest(
            source, output, defaults=defaults, source_format=source_format, check_files=not no_check_files
        )
    except (ManifestBuildError, ValueError, OSError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"wrote {redact(output)}: {report.num_rows} rows")


# One pair without Prefect, any video's QC, the weights: the model-only command's own commands.
app.command("render")(model_cli.render_command)
app.command("qc")(model_cli.qc_command)
app.add_typer(model_cli.weights_app, name="weights")


# -------------------------------------------------------------------------------------------- printing


def _print_counts(summary: Any) -> None:
    resumed = getattr(summary, "resumed", 0)
    print(
        f"\nbatch {summary.batch_id}: {summary.succeeded}/{summary.total} succeeded, {summary.failed} failed "
        f"({summary.qc_fail} failed QC, {summary.invalid} invalid in the manifest), {summary.reused} reused"
        + (f" ({resumed} taken from the results journal of an earlier run)" if resumed else "")
        + f", {summary.seconds:.1f} s"
    )


def _print_summary(summary: Any) -> None:
    _print_counts(summary)
    print(f"QC: {summary.qc_pass} pass, {summary.qc_warn} warn, {summary.qc_fail} fail")
    for row_id, stage, error in summary.failures:
        print(f"  FAILED {row_id} at {stage}: {error}")
    if summary.weights:
        print(f"weights: {', '.join(summary.weights)} (policy {summary.weights_policy})")
    if summary.synthetic_weights:
        print("  WARNING: SYNTHETIC weights were used: these videos are not real results.")
    print(f"videos:  {summary.batch_uri}/items/<id>/video.mp4")
    print(f"results: {summary.results_uri}")
    if summary.report_uri:
        print(f"report:  {summary.report_uri}")
        print(f"index:   {summary.index_uri}")


def _read_results(target: str) -> Any:
    import pandas as pd

    uri = target if target.endswith(".parquet") else uris.join(target, "results.parquet")
    if not target.endswith(".parquet") and not storage.exists(uri):
        journaled = _read_journal(target)
        if journaled is not None:
            return journaled
    return pd.read_parquet(io.BytesIO(storage.read_bytes(uri)), dtype_backend="numpy_nullable"), uri


def _read_journal(batch: str) -> Any:
    """(results so far, journal URI) from the batch's results journal, when its run did not write
    ``results.parquet`` (killed, or its storage failed at the end); None without a journal."""
    from flows.journal import FINGERPRINT, QC_METRICS, read_journal
    from flows.render_batch import RESULT_SCHEMA
    from sadtalker.paths import BatchPaths

    norm = uris.normalize(batch).rstrip("/")
    paths = BatchPaths.create(uris.parent(norm), norm.rsplit("/", 1)[-1])
    table = read_journal(paths, RESULT_SCHEMA)
    if table is None:
        return None
    print(
        f"note: {redact(paths.results)} is not there (its run did not finish); these are the "
        f"{table.num_rows} rows its results journal holds (rerun the batch to write results.parquet)",
        file=sys.stderr,
    )
    frame = table.drop_columns([c for c in (FINGERPRINT, QC_METRICS) if c in table.column_names])
    return frame.to_pandas().convert_dtypes(), paths.journal


def _show_qc(results_uri: str, ids: set[str]) -> int:
    """Print the QC figures of ``qc.parquet`` beside ``results_uri`` (rows in ``ids``), rounded."""
    import pandas as pd

    from flows.publish import round_figure

    uri = uris.join(uris.parent(results_uri), "qc.parquet")
    try:
        qc = pd.read_parquet(io.BytesIO(storage.read_bytes(uri)))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the QC table: {redact(str(exc))}", file=sys.stderr)
        return 2
    qc = qc[qc["id"].isin(ids)]
    from flows.publish import HEADLINE_METRICS

    shown = ["id", "qc_verdict", *HEADLINE_METRICS, "qc_problems"]
    columns = [c for c in shown if c in qc.columns]
    table = qc[columns].astype(object).map(round_figure)
    table = table.where(table.notna(), "-")
    if "qc_problems" in table:
        table["qc_problems"] = table["qc_problems"].astype(str).str.slice(0, 80)
    print(table.to_string(index=False))
    counts = qc["qc_verdict"].value_counts().to_dict()
    print(f"\n{redact(uri)}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "sadtalker-batch") -> int:
    """Run one command (see the module docstring); returns the exit status."""
    return run_app(app, argv, prog)


if __name__ == "__main__":
    sys.exit(main(prog="python -m flows.cli"))
