"""Issue 11, secrets: the S3 credentials of a batch never appear in a log line, an output object, a Prefect
artifact, log, task state or flow-run record.

A batch on the fake pipeline (tests/pipeline_fakes.py) against the real S3 server of tests/test_s3.py
(SeaweedFS ``weed mini`` on 127.0.0.1; its fixtures are imported, not copied), with rows that succeed,
warn, fail at a stage and name a missing S3 file. botocore / s3fs log at DEBUG meanwhile: their request
logs carry the ``Authorization`` header, whose ``Credential=<key id>/...`` is the realistic leak.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import test_s3
from flow_helpers import flow_run_record, put_inputs
from test_s3 import ACCESS_KEY, SECRET_KEY, s3_endpoint, s3_env  # noqa: F401

import flows  # noqa: F401  (offline Prefect settings first)
from flows.render_batch import render_batch
from manifests.build import write_manifest
from sadtalker import storage

pytestmark = test_s3.pytestmark  # skipped with a reason without the `weed` binary
SECRETS = (ACCESS_KEY, SECRET_KEY)
DEBUG_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec")


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_s3_credentials_reach_no_log_output_or_artifact(
    s3_env: str,  # noqa: F811
    fake_pipeline: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert len(ACCESS_KEY) >= 12 and len(SECRET_KEY) >= 12  # distinctive: no ordinary text contains them
    rows = {
        "good": (b"photo-a", b"speech FRAMES=3"),
        "shaky": (b"photo-a", b"speech FRAMES=3 QCWARN"),
        "noface": (b"photo-b NOFACE", b"speech"),
        "badaudio": (b"photo-a", b"speech BADAUDIO"),
    }
    records = put_inputs(f"{s3_env}/sec/in", rows)
    records.append({"id": "gone", "image": "good.png", "audio": "gone.wav"})  # a missing S3 object
    manifest = f"{s3_env}/sec/in/manifest.parquet"
    write_manifest(records, manifest, check_files=False)
    output = f"{s3_env}/sec/out"

    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    state = render_batch(manifest=manifest, output=output, device="cpu", workers=1, return_state=True)
    summary = state.result()
    run = flow_run_record(state.state_details.flow_run_id)
    assert (summary.succeeded, summary.failed, summary.invalid) == (2, 3, 1)

    # Logs of this process (every logger, DEBUG for the S3 stack) and everything written to stdout/stderr.
    captured = capfd.readouterr()
    records_text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for name, text in (("log records", records_text), ("stdout", captured.out), ("stderr", captured.err)):
        assert not _leaks(text), f"a credential in the {name}"
    signed = [r.getMessage() for r in caplog.records if "Authorization" in r.getMessage()]
    assert signed, "botocore logged no signed request: the leak path was not exercised"
    assert all("***" in m for m in signed)  # the header's value was masked, not dropped unseen

    # Every object the batch wrote (results, QC, batch record, reports, items, cache).
    fs, root = storage.filesystem(output)
    objects = sorted(fs.find(root))
    names = {Path(key).name for key in objects}
    assert {"results.parquet", "qc.parquet", "batch.json", "report.html", "index.html"} <= names, names
    assert {"qc.json", "render.json", "video.mp4"} <= names
    for key in objects:
        data = fs.cat_file(key)
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret[:4]}… in s3://{key}"
    results = pd.read_parquet(io.BytesIO(storage.read_bytes(summary.results_uri))).set_index("id")
    assert "file not found: s3://" in results.loc["gone", "error"]  # errors name S3 URLs, not keys

    # Prefect: artifacts, the flow run's logs, task states and the flow run itself (parameters, state).
    artifacts, logs, task_runs, flow_run = run.artifacts, run.logs, run.task_runs, run.flow_run
    assert {a.type for a in artifacts} >= {"table", "markdown", "progress"} and logs and task_runs
    for artifact in artifacts:
        assert not _leaks(f"{artifact.key} {artifact.description} {artifact.data}"), artifact.key
    assert not _leaks("\n".join(log.message for log in logs))
    assert not _leaks("\n".join(f"{t.name} {t.state.message if t.state else ''}" for t in task_runs))
    assert not _leaks(flow_run.model_dump_json())
