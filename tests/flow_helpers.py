"""Scaffolding shared by the orchestration tests: manifests over fake media, runs of the batch CLI in a
subprocess with the fake pipeline (tests/fake_site), and the batch journal as a table.

The ``fake_pipeline`` fixture itself lives in tests/conftest.py; the fakes in tests/pipeline_fakes.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from manifests.build import write_manifest

REPO = Path(__file__).resolve().parents[1]
FAKE_SITE = REPO / "tests" / "fake_site"


def fake_site_pythonpath() -> str:
    """``PYTHONPATH`` for a subprocess that must run the fake pipeline (its sitecustomize installs it)."""
    return os.pathsep.join([str(FAKE_SITE), str(REPO)])


def make_manifest(
    folder: Path,
    rows: dict[str, tuple[bytes, bytes]],
    name: str = "manifest.parquet",
    **extra: dict[str, Any],
) -> str:
    """Write ``<id>.png`` / ``<id>.wav`` with the given (photo, speech) bytes and a manifest over them;
    ``extra[<id>]`` adds option columns to that row. Returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for row_id, (image, audio) in rows.items():
        (folder / f"{row_id}.png").write_bytes(image)
        (folder / f"{row_id}.wav").write_bytes(audio)
        records.append(
            {"id": row_id, "image": f"{row_id}.png", "audio": f"{row_id}.wav", **extra.get(row_id, {})}
        )
    write_manifest(records, str(folder / name))
    return str(folder / name)


def journaled(folder: Path, pattern: str = "*/results.partial/part-*.parquet") -> pd.DataFrame:
    """Every record in the journal parts under ``folder``, the newest per row id, indexed by id (empty when
    no part is written yet). The default pattern finds the batch folder under an output prefix."""
    parts = sorted(folder.glob(pattern))
    if not parts:
        return pd.DataFrame(columns=["id", "status"]).set_index("id")
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.drop_duplicates("id", keep="last").set_index("id")


def start_run(
    tmp_path: Path, manifest: str, out: Path, *extra: str, **env_extra: str
) -> subprocess.Popen[bytes]:
    """``python -m flows.cli run MANIFEST --output OUT --device cpu EXTRA...`` in its own session (so a test
    can signal or kill its whole process group), with the fake pipeline, its call log in
    ``tmp_path/calls.log``, its own Prefect home, scratch folders under ``tmp_path`` and its output in
    ``tmp_path/run.log``; ``env_extra`` adds environment variables (e.g. ``PIPELINE_FAKES_HANG="1"``)."""
    env = {
        **os.environ,
        "PYTHONPATH": fake_site_pythonpath(),
        "PIPELINE_FAKES_CALL_LOG": str(tmp_path / "calls.log"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "TMPDIR": str(tmp_path),  # a killed run's scratch folders stay in the test's own folder
        **env_extra,
    }
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        manifest,
        "--output",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    log = (tmp_path / "run.log").open("wb")
    try:
        return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=log)
    finally:
        log.close()  # the child holds its own copy of the descriptor


@dataclass
class FlowRunRecord:
    """What the Prefect API keeps of one flow run: everything a user sees in the UI."""

    flow_run: Any
    artifacts: list[Any]
    logs: list[Any]
    task_runs: list[Any]


def flow_run_record(flow_run_id: Any) -> FlowRunRecord:
    """The flow run, its artifacts, logs and task runs, read back through the Prefect client (after
    flushing this process's API log handler, so the run's last logs are there)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        return FlowRunRecord(
            flow_run=client.read_flow_run(flow_run_id),
            artifacts=client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            ),
            logs=client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))),
            task_runs=client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            ),
        )


def put_inputs(prefix: str, rows: dict[str, tuple[bytes, bytes]], folder: str = "") -> list[dict[str, str]]:
    """Write ``<prefix>/<folder><id>.png`` / ``.wav`` through the storage layer (any fsspec URL, e.g. the
    test S3 server) and return manifest records that name them relative to ``prefix``."""
    from sadtalker import storage

    for row_id, (image, audio) in rows.items():
        storage.write_bytes(f"{prefix}/{folder}{row_id}.png", image)
        storage.write_bytes(f"{prefix}/{folder}{row_id}.wav", audio)
    return [{"id": i, "image": f"{folder}{i}.png", "audio": f"{folder}{i}.wav"} for i in rows]
