"""``sadtalker-batch submit``: a reviewer's loop on a shared Prefect server: submit -> watch -> review.

1. The manifest is validated here, every problem at once, before anything is sent (nothing is sent while a
   problem remains, unless ``--allow-invalid``: then the invalid rows fail alone in the batch). The allowed
   input prefixes are those the run will use: ``--allow-prefix`` / ``--allow-any-path`` (sent with the
   run), else the deployment's ``allowed_prefixes`` parameter, else the default, the manifest's own tree.
2. A flow run of the deployment (default ``render-batch/render-batch``, from ``prefect.yaml``) is created
   with the manifest, the output prefix, the batch id computed here and the QC thresholds.
3. The flow run's page in the Prefect UI is printed; with ``--wait`` its state is followed until it ends,
   then the report's location and the batch's counts are printed.

The server is the one Prefect is configured for (``PREFECT_API_URL``); the UI link uses ``PREFECT_UI_URL``
when set, else the API URL without its ``/api``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from sadtalker import storage, uris
from sadtalker.redaction import redact

__all__ = ["flow_run_url", "submit"]

DEFAULT_DEPLOYMENT = "render-batch/render-batch"
_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def flow_run_url(flow_run_id: Any) -> str:
    """The flow run's page in the Prefect UI of the configured server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or ""
    if not ui:
        api = PREFECT_API_URL.value() or ""
        ui = api[: -len("/api")] if api.endswith("/api") else api
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _parser(prog: str) -> argparse.ArgumentParser:
    from flows.cli import _threshold_arguments
    from manifests.validate import add_allowed_prefix_arguments
    from sadtalker.cli import add_timeout_argument

    parser = argparse.ArgumentParser(
        prog=f"{prog} submit",
        description="Validate a manifest here, then run it on a Prefect deployment (shared server).",
    )
    parser.add_argument("manifest", help="Parquet manifest the workers can read (s3://..., or a shared path)")
    parser.add_argument("-o", "--output", required=True, help="output prefix the workers write to")
    parser.add_argument("--deployment", default=DEFAULT_DEPLOYMENT, help=f"default: {DEFAULT_DEPLOYMENT}")
    parser.add_argument("--batch-id", help="default: manifest stem + 12 hex digits of its hash")
    parser.add_argument("--cache", help="shared stage cache prefix (default: OUTPUT/cache)")
    parser.add_argument("--device", help="auto, cpu, cuda (default: the deployment's)")
    parser.add_argument(
        "--weights",
        choices=("official", "synthetic", "auto"),
        help="weights policy of this run (default: the deployment's; the nightly one uses official)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the run and print where the report is")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between state checks (--wait)")
    parser.add_argument(
        "--wait-timeout", type=float, default=None, help="with --wait: stop following after this many seconds"
    )
    parser.add_argument("--allow-invalid", action="store_true", help="send even when rows are invalid")
    parser.add_argument("--no-check-files", action="store_true", help="do not check that inputs exist")
    _threshold_arguments(parser)
    add_allowed_prefix_arguments(parser)
    add_timeout_argument(parser)  # the stages' time limits of this run (the deployment's when not given)
    return parser


def _deployment_prefixes(name: str) -> list[str] | None:
    """The deployment's ``allowed_prefixes`` parameter (None when it does not set one)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        prefixes = (client.read_deployment_by_name(name).parameters or {}).get("allowed_prefixes")
    if prefixes is None or isinstance(prefixes, str):
        return None if prefixes is None else [prefixes]
    return [str(p) for p in prefixes]


def submit(argv: Sequence[str], prog: str = "sadtalker-batch") -> int:
    """Run the command; exit 0 when the run was created (``--wait``: completed with every row good),
    1 when the manifest is invalid or the waited-for run failed or has failed rows, 2 on other errors."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    from flows.cli import _thresholds
    from manifests.validate import allowed_prefixes_from_args, validate_manifest
    from sadtalker.paths import BatchPaths, batch_id_for
    from sadtalker.timeouts import StageTimeouts

    try:
        thresholds = _thresholds(args.qc_threshold)
        timeouts = StageTimeouts.parse_items(args.timeout) or None  # a bad name: exit 2, nothing sent
    except ValueError as exc:
        parser.error(str(exc))
    manifest, output = uris.normalize(args.manifest), uris.normalize(args.output)
    prefixes = allowed_prefixes_from_args(args)
    explicit = prefixes is not None
    if not explicit:  # validate with the prefixes the run will use: the deployment's
        try:
            prefixes = _deployment_prefixes(args.deployment)
        except Exception as exc:
            print(f"error: cannot read {args.deployment}: {redact(str(exc))}", file=sys.stderr)
            return 2
    try:
        report = validate_manifest(manifest, check_files=not args.no_check_files, allowed_prefixes=prefixes)
    except Exception as exc:
        print(f"error: cannot read the manifest: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"{redact(manifest)}: {report.num_rows} rows, {len(report.invalid)} invalid")
    print(f"allowed input prefixes: {redact(', '.join(report.allowed_prefixes))}")
    if report.problems:
        print(report.format_problems(limit=1000))
        if not args.allow_invalid:
            print("nothing was sent: fix the manifest (or pass --allow-invalid)", file=sys.stderr)
            return 1
    batch_id = args.batch_id or batch_id_for(manifest, report.manifest_sha256)
    paths = BatchPaths.create(output, batch_id, args.cache)
    parameters: dict[str, Any] = {"manifest": manifest, "output": output, "batch_id": batch_id}
    for name, value in (
        ("cache", args.cache),
        ("device", args.device),
        ("weights", args.weights),
        ("qc_thresholds", thresholds),
        ("allowed_prefixes", prefixes if explicit else None),
        ("timeouts", timeouts),
    ):
        if value:
            parameters[name] = value

    from prefect.deployments import run_deployment

    try:
        run = run_deployment(name=args.deployment, parameters=parameters, timeout=0)
    except Exception as exc:
        print(f"error: cannot create a run of {args.deployment}: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"flow run {run.name} ({run.id}) of {args.deployment}")
    print(f"  watch:  {flow_run_url(run.id)}")
    print(f"  report: {redact(paths.report)} (when the run ends)")
    if not args.wait:
        return 0
    state = _follow(run.id, args.poll, args.wait_timeout)
    print(f"flow run {run.name}: {state}")
    if state != "COMPLETED":
        return 1
    return _print_outcome(paths)


def _follow(flow_run_id: Any, poll: float, timeout: float | None) -> str:
    """Print each state change of the flow run until it ends; returns its final state type."""
    from prefect.client.orchestration import get_client

    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            kind = run.state.type.value if run.state else "PENDING"
            name = run.state.name if run.state else "Pending"
            if name != last:
                print(f"  {time.strftime('%H:%M:%S')} {name}", flush=True)
                last = name
            if kind in _FINAL:
                return kind
            if deadline is not None and time.monotonic() > deadline:
                return f"still {name} after the --wait-timeout (the run goes on)"
            time.sleep(poll)


def _print_outcome(paths: Any) -> int:
    """The batch's counts from its ``batch.json``, and where its report is."""
    try:
        record = storage.read_json(paths.batch_record)
    except (OSError, ValueError) as exc:
        print(f"the run completed but its batch record cannot be read: {redact(str(exc))}")
        return 1
    counts = record.get("counts", {})
    print(
        f"batch {record.get('batch_id')}: {record.get('rows')} rows, {counts.get('succeeded')} succeeded, "
        f"{counts.get('failed')} failed; QC {counts.get('qc_pass')} pass, {counts.get('qc_warn')} warn, "
        f"{counts.get('qc_fail')} fail; weights {record.get('weights')}"
    )
    print(f"report: {redact(record.get('report') or paths.report)}")
    print(f"index:  {redact(paths.index)}")
    return 0 if not counts.get("failed") else 1
