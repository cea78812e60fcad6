"""QC verdicts through the batch (fake pipeline: the verdict follows a marker in the speech file): a QC
failure fails its row at stage ``qc`` but keeps the video; thresholds are set per batch; the batch writes
qc.parquet, batch.json, report.html, the prefix's index.html, and its Prefect artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pipeline_fakes
import pytest
from flow_helpers import make_manifest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from flows.publish import artifact_key, round_figure
from flows.render_batch import render_batch


def qc_manifest(folder: Path, speech: dict[str, bytes]) -> str:
    """A manifest named nightly.parquet (its artifact key) over one photo per row and the given speech."""
    rows = {row_id: (b"photo " + row_id.encode(), audio) for row_id, audio in speech.items()}
    return make_manifest(folder, rows, name="nightly.parquet")


def test_round_figure_is_for_reading() -> None:
    assert round_figure(192.82986845999972) == 193.0 and round_figure(0.0123456) == 0.0123
    assert round_figure(3) == 3 and round_figure(True) is True and round_figure(None) is None
    assert artifact_key("s3://b/m/nightly.parquet", None) == "render-batch-nightly"
    assert artifact_key("x.parquet", "Render Batch GPU") == "render-batch-render-batch-gpu"


def test_a_qc_failure_fails_its_row_keeps_its_video_and_reaches_every_output(
    tmp_path: Path, fake_pipeline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = qc_manifest(
        tmp_path / "in", {"good": b"speech", "shaky": b"speech QCWARN", "offsync": b"speech QCFAIL"}
    )
    out = tmp_path / "out"
    assert cli_main(["run", manifest, "--output", str(out), "--device", "cpu"]) == 1  # a QC failure: exit 1
    printed = capsys.readouterr().out
    assert "QC: 1 pass, 1 warn, 1 fail" in printed and "FAILED offsync at qc: QC fail: sync_offset" in printed
    batch = next(out.glob("nightly-*"))
    assert f"report:  {batch / 'report.html'}" in printed

    results = pd.read_parquet(batch / "results.parquet").set_index("id")
    assert dict(results["qc_verdict"]) == {"good": "pass", "shaky": "warn", "offsync": "fail"}
    assert dict(results["status"]) == {"good": "succeeded", "shaky": "succeeded", "offsync": "failed"}
    assert results.loc["offsync", "failed_stage"] == "qc"
    assert Path(results.loc["offsync", "video_uri"]).read_bytes().startswith(b"FAKEMP4")  # kept

    qc = pd.read_parquet(batch / "qc.parquet").set_index("id")
    assert list(qc.index) == ["good", "shaky", "offsync"]
    assert list(qc["sync_offset_frames"]) == [0.0, 2.0, 6.0]
    assert list(qc["sync_offset_frames__verdict"]) == ["pass", "warn", "fail"]
    assert (qc["qc_protocol"] == pipeline_fakes.QC_PROTOCOL).all()
    used = json.loads(qc.loc["good", "thresholds"])
    assert used["sync_offset_frames"] == {"warn": 1.0, "fail": 2.0, "direction": "max"}

    record = json.loads((batch / "batch.json").read_text())
    assert record["counts"] | {} == {
        "succeeded": 2,
        "failed": 1,
        "invalid": 0,
        "qc_pass": 1,
        "qc_warn": 1,
        "qc_fail": 1,
    }
    assert record["weights"] == "synthetic" and record["versions"]["sadtalker-batch"]
    assert (batch / "report.html").is_file() and (out / "index.html").is_file()
    assert "offsync" in (batch / "report.html").read_text()

    assert cli_main(["results", str(batch), "--qc"]) == 0
    shown = capsys.readouterr().out
    assert "offsync" in shown and "fail" in shown and "sync_offset_frames" in shown

    (batch / "report.html").unlink()
    assert cli_main(["report", str(batch)]) == 0 and (batch / "report.html").is_file()
    assert cli_main(["report", "--index", str(out)]) == 0


def test_thresholds_are_set_per_batch(tmp_path: Path, fake_pipeline: Any) -> None:
    manifest = qc_manifest(tmp_path / "in", {"shaky": b"speech QCWARN"})
    strict = render_batch(
        manifest=manifest,
        output=str(tmp_path / "out"),
        device="cpu",
        qc_thresholds={"sync_offset_frames": {"fail": 1}},
        report=False,
    )
    assert (strict.qc_fail, strict.failed) == (1, 1) and strict.report_uri is None
    qc = pd.read_parquet(Path(strict.batch_uri) / "qc.parquet")
    assert json.loads(qc.loc[0, "thresholds"])["sync_offset_frames"]["fail"] == 1.0
    record = json.loads((Path(strict.batch_uri) / "batch.json").read_text())
    assert record["threshold_overrides"] == {"sync_offset_frames": {"fail": 1.0}}
    assert not (Path(strict.batch_uri) / "report.html").exists()  # report=False
    with pytest.raises(ValueError, match="no_such_metric"):
        render_batch(
            manifest=manifest, output=str(tmp_path / "out"), qc_thresholds={"no_such_metric": {"fail": 1}}
        )
    assert cli_main(["run", manifest, "-o", str(tmp_path / "o2"), "--qc-threshold", "nonsense"]) == 2


def test_artifacts_carry_rounded_qc_figures_the_worst_items_and_a_report_link(
    tmp_path: Path, fake_pipeline: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    manifest = qc_manifest(tmp_path / "in", {"good": b"speech", "offsync": b"speech QCFAIL"})
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu")
    key = artifact_key(manifest, None)
    with get_client(sync_client=True) as client:

        def latest(k: str) -> Any:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[k])))
            return sorted(found, key=lambda a: a.created)[-1]

        table = latest(key).data
        table = json.loads(table) if isinstance(table, str) else table
        summary_md = latest(f"{key}-summary").data
        link = latest(f"{key}-report").data
    rows = {r["id"]: r for r in table}
    assert rows["offsync"]["qc_verdict"] == "fail" and rows["offsync"]["sync_offset_frames"] == 6.0
    digits = [f"{r['total_s']:.15g}".replace(".", "").replace("-", "").strip("0") for r in table]
    assert all(len(d) <= 3 for d in digits), digits  # 3 significant figures, for reading
    assert "## Worst items" in summary_md and "| offsync | failed | fail |" in summary_md
    # Prefect stores a link artifact as the markdown link it shows: [text](uri)
    assert re.fullmatch(rf"\[QC report [^\]]+\]\(file://\S+/{summary.batch_id}/report\.html\)", link), link


def test_qc_table_metric_names_that_match_result_columns_give_one_readable_column(tmp_path: Path) -> None:
    """The real QC measures ``width`` and ``height`` on the file, which are also result columns: the table
    must still have unique column names (pandas refuses a Parquet file with duplicates)."""
    import json

    import pyarrow as pa

    from flows.publish import write_qc_table

    metrics = {"width": 254.0, "width__verdict": "info", "fps": 25.0, "fps__verdict": "info"}
    results = pa.table(
        {
            "id": ["a", "b"],
            "width": [256, 256],
            "qc_verdict": ["pass", None],
            "_qc_metrics": [json.dumps(metrics), None],
        }
    )
    uri = str(tmp_path / "qc.parquet")
    assert write_qc_table(uri, results, ("id", "width", "qc_verdict"), {}) == 1  # b has no QC verdict
    table = pd.read_parquet(uri)
    assert table.columns.is_unique and table.loc[0, "width"] == 254.0  # measured on the file
    assert list(table.columns[:2]) == ["id", "qc_verdict"]
