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
render ... / weights ... / qc ...  (forwarded to the model-only ``sadtalker`` command)
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

import argparse
import io
import sys
from collections.abc import Sequence
from typing import Any

import flows  # noqa: F401  (offline Prefect settings before Prefect is imported)
from sadtalker import storage, uris
from sadtalker.cli import add_timeout_argument, add_weights_policy_argument
from sadtalker.redaction import redact

__all__ = ["main"]

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


def _threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qc-threshold",
        action="append",
        default=[],
        metavar="METRIC.LEVEL=VALUE",
        help="override a QC threshold for this batch, e.g. identity_similarity.fail=0.5 (repeatable; "
        "metrics and defaults: docs/qc.md)",
    )


def _thresholds(values: Sequence[str]) -> dict[str, dict[str, float]] | None:
    from sadtalker.qc import parse_threshold_overrides

    return parse_threshold_overrides(values) or None


def _run(argv: Sequence[str], prog: str) -> int:
    from manifests.validate import add_allowed_prefix_arguments, allowed_prefixes_from_args

    parser = argparse.ArgumentParser(prog=f"{prog} run", description="Render one video per manifest row.")
    parser.add_argument("manifest", help="Parquet manifest (path or fsspec URL: file://, s3://, ...)")
    parser.add_argument(
        "-o", "--output", required=True, help="output prefix; the batch goes to OUTPUT/BATCH_ID"
    )
    parser.add_argument("--cache", help="shared stage cache prefix (default: OUTPUT/cache)")
    parser.add_argument(
        "--batch-id", help="default: manifest stem + 12 hex digits of its hash (reruns resume)"
    )
    parser.add_argument("--strict", action="store_true", help="any manifest problem fails the whole batch")
    parser.add_argument("--force", action="store_true", help="recompute every stage, even when cached")
    parser.add_argument("--runner", choices=("threads", "dask"), default="threads", help="default: threads")
    parser.add_argument(
        "--dask-address", help="scheduler of an existing Dask cluster (implies --runner dask)"
    )
    parser.add_argument("--workers", type=int, help="rows in flight (threads) or Dask worker processes")
    parser.add_argument(
        "--window", type=int, help="at most this many rows submitted at once (default: 2 per worker)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:<i>")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--no-check-files", action="store_true", help="do not check that inputs exist first")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html / index.html")
    _threshold_arguments(parser)
    add_weights_policy_argument(parser)
    add_allowed_prefix_arguments(parser)
    add_timeout_argument(parser)
    args = parser.parse_args(argv)

    from flows.render_batch import BatchStopped, ResultsNotSavedError, render_batch
    from sadtalker.timeouts import StageTimeouts

    try:
        thresholds = _thresholds(args.qc_threshold)
        timeouts = StageTimeouts.parse_items(args.timeout) or None  # a bad name: exit 2, before any work
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = render_batch(
            manifest=args.manifest,
            output=args.output,
            cache=args.cache,
            batch_id=args.batch_id,
            strict=args.strict,
            force=args.force,
            runner="dask" if args.dask_address else args.runner,
            dask_address=args.dask_address,
            workers=args.workers,
            window=args.window,
            device=args.device,
            dtype=args.dtype,
            check_files=not args.no_check_files,
            qc_thresholds=thresholds,
            report=not args.no_report,
            weights=args.weights,
            allowed_prefixes=allowed_prefixes_from_args(args),
            timeouts=timeouts,
        )
    except BatchStopped as exc:  # SIGTERM / Ctrl-C, or the storage breaker: what ran, what is saved
        if exc.summary is not None:
            _print_counts(exc.summary)
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum if exc.signum else 4
    except ResultsNotSavedError as exc:  # it ran: say what is saved (the journal) and what is not
        if exc.summary is not None:
            _print_counts(exc.summary)
        print(f"error: the batch ran, but its results were not all written: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:
        print(f"error: the batch did not run: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0 if summary.ok else 1


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


def _results(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=f"{prog} results", description="Show a batch's results table.")
    parser.add_argument("batch", help="OUTPUT/BATCH_ID (the batch folder) or a results.parquet")
    parser.add_argument("--failed", action="store_true", help="only the failed rows")
    parser.add_argument("--all-columns", action="store_true", help="every column, one row per block")
    parser.add_argument("--qc", action="store_true", help="the QC figures (qc.parquet) instead of the stages")
    args = parser.parse_args(argv)
    try:
        frame, uri = _read_results(args.batch)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read results: {redact(str(exc))}", file=sys.stderr)
        return 2
    shown = frame[frame["status"] == "failed"] if args.failed else frame
    if args.qc:
        return _show_qc(uri, set(shown["id"]))
    if args.all_columns:
        for _, row in shown.iterrows():
            print(row.to_string(), end="\n\n")
    else:
        table = shown[_SHOWN_COLUMNS].astype(object)
        table = table.where(table.notna(), "-")
        table["error"] = table["error"].astype(str).str.slice(0, 80)
        print(table.to_string(index=False))
    counts = frame["status"].value_counts().to_dict()
    print(f"\n{redact(uri)}: {len(frame)} rows, " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


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


def _report(argv: Sequence[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{prog} report", description="Rebuild a batch's report.html, or an output prefix's index.html."
    )
    parser.add_argument("batch", nargs="?", help="OUTPUT/BATCH_ID (folder or URI) whose report to rebuild")
    parser.add_argument("--index", metavar="OUTPUT", help="rebuild OUTPUT/index.html (every batch under it)")
    args = parser.parse_args(argv)
    if bool(args.batch) == bool(args.index):
        parser.error("give a batch folder or --index OUTPUT (one of them)")
    from sadtalker.qc.report import build_index, build_report

    try:
        uri = build_index(args.index) if args.index else build_report(args.batch)
    except (OSError, ValueError) as exc:
        print(f"error: cannot build the report: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"wrote {redact(uri)}")
    return 0


def _validate(argv: Sequence[str], prog: str) -> int:
    from manifests.validate import main as validate_main

    return validate_main(argv, prog=f"{prog} validate")


def _build(argv: Sequence[str], prog: str) -> int:
    from manifests.build import main as build_main

    return build_main(argv, prog=f"{prog} build-manifest")


_USAGE = """usage: {prog} COMMAND ...

commands:
  run MANIFEST --output PREFIX [--strict] [--force] [--runner threads|dask] [--dask-address A] ...
                  render one video per manifest row (exit 1 when a row failed)
  submit MANIFEST --output PREFIX [--deployment FLOW/NAME] [--wait] [--qc-threshold M.L=V ...]
                  validate locally, then run the batch on a shared Prefect server's deployment
  validate MANIFEST [--no-check-files] [--allow-prefix PREFIX ... | --allow-any-path]
                  report every problem of every row (exit 1 when there is one); rows may name files
                  only under the allowed prefixes (default: the manifest's own folder tree)
  results OUTPUT/BATCH_ID [--failed] [--qc] [--all-columns]
                  show a batch's results table (--qc: its QC figures)
  report OUTPUT/BATCH_ID | --index OUTPUT
                  rebuild a batch's report.html, or the index.html of every batch under OUTPUT
  build-manifest SOURCE -o OUT.parquet [--set KEY=VALUE ...]
                  build a manifest from a CSV, a JSON list or a folder of same-stem pairs
  render ... | weights ... | qc ...
                  one pair without Prefect, weights, QC of any video (the `sadtalker` command)

'{prog} COMMAND --help' describes each command."""


def _model_cli(argv: Sequence[str], prog: str) -> int:
    from sadtalker.cli import main as model_main

    return model_main(list(argv))


def main(argv: Sequence[str] | None = None, prog: str = "sadtalker-batch") -> int:
    """Run one command (see the module docstring); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE.format(prog=prog))
        return 0 if args else 2
    from flows.submit import submit as _submit

    handlers = {
        "run": _run,
        "submit": _submit,
        "validate": _validate,
        "results": _results,
        "report": _report,
        "build-manifest": _build,
    }
    if args[0] in ("render", "weights", "qc"):
        return _model_cli(args, prog)
    handler = handlers.get(args[0])
    if handler is None:
        print(_USAGE.format(prog=prog), file=sys.stderr)
        print(f"\nerror: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    try:
        return handler(args[1:], prog)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main(prog="python -m flows.cli"))
