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

import sys
import time
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


def _deployment_prefixes(name: str) -> list[str] | None:
    """The deployment's ``allowed_prefixes`` parameter (None when it does not set one)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        prefixes = (client.read_deployment_by_name(name).parameters or {}).get("allowed_prefixes")
    if prefixes is None or isinstance(prefixes, str):
        return None if prefixes is None else [prefixes]
    return [str(p) for p in prefixes]


def submit(
    manifest: str,
    output: str,
    *,
    deployment: str = DEFAULT_DEPLOYMENT,
    batch_id: str | None = None,
    cache: str | None = None,
    device: str | None = None,
    compile: bool | None = None,
    weights: str | None = None,
    qc_thresholds: dict[str, dict[str, float]] | None = None,
    allowed_prefixes: list[str] | None = None,
    timeouts: dict[str, float] | None = None,
    check_files: bool = True,
    allow_invalid: bool = False,
    wait: bool = False,
    poll: float = 2.0,
    wait_timeout: float | None = None,
) -> int:
    """Validate the manifest, then create a run of ``deployment`` (the ``sadtalker-batch submit`` command).

    Parameters left None are the deployment's; ``allowed_prefixes`` None: the deployment's, else the
    default (the manifest's own tree). Returns the exit status: 0 when the run was created (``wait``:
    completed with every row good), 1 when the manifest is invalid or the waited-for run failed or has
    failed rows, 2 on other errors.
    """
    from manifests.validate import validate_manifest
    from sadtalker.paths import BatchPaths, batch_id_for

    manifest, output = uris.normalize(manifest), uris.normalize(output)
    prefixes = allowed_prefixes
    explicit = prefixes is not None
    if not explicit:  # validate with the prefixes the run will use: the deployment's
        try:
            prefixes = _deployment_prefixes(deployment)
        except Exception as exc:
            print(f"error: cannot read {deployment}: {redact(str(exc))}", file=sys.stderr)
            return 2
    try:
        report = validate_manifest(manifest, check_files=check_files, allowed_prefixes=prefixes)
    except Exception as exc:
        print(f"error: cannot read the manifest: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"{redact(manifest)}: {report.num_rows} rows, {len(report.invalid)} invalid")
    print(f"allowed input prefixes: {redact(', '.join(report.allowed_prefixes))}")
    if report.problems:
        print(report.format_problems(limit=1000))
        if not allow_invalid:
            print("nothing was sent: fix the manifest (or pass --allow-invalid)", file=sys.stderr)
            return 1
    batch_id = batch_id or batch_id_for(manifest, report.manifest_sha256)
    paths = BatchPaths.create(output, batch_id, cache)
    parameters: dict[str, Any] = {"manifest": manifest, "output": output, "batch_id": batch_id}
    for name, value in (
        ("cache", cache),
        ("device", device),
        ("weights", weights),
        ("qc_thresholds", qc_thresholds),
        ("allowed_prefixes", prefixes if explicit else None),
        ("timeouts", timeouts),
    ):
        if value:
            parameters[name] = value
    if compile is not None:  # False is a choice too (a deployment that compiles, for this run not)
        parameters["compile"] = compile

    from prefect.deployments import run_deployment

    try:
        run = run_deployment(name=deployment, parameters=parameters, timeout=0)
    except Exception as exc:
        print(f"error: cannot create a run of {deployment}: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(f"flow run {run.name} ({run.id}) of {deployment}")
    print(f"  watch:  {flow_run_url(run.id)}")
    print(f"  report: {redact(paths.report)} (when the run ends)")
    if not wait:
        return 0
    state = _follow(run.id, poll, wait_timeout)
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
