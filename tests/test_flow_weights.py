"""The weights policy through the batch (fake pipeline): ``official`` refuses a batch before any row work or
output when the files are missing; every row records the label of exactly the files it was rendered with;
``batch.json`` keeps the policy and the sets resolved up front; the CLI says which weights were used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pipeline_fakes
import pytest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from flows.render_batch import render_batch
from manifests.build import write_manifest
from sadtalker.errors import WeightsError


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("SADTALKER_WEIGHTS_POLICY", raising=False)
    monkeypatch.delenv(pipeline_fakes.OFFICIAL_ENV, raising=False)
    yield from pipeline_fakes.use_in_test(monkeypatch)


def _manifest(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p.png").write_bytes(b"photo")
    (folder / "s.wav").write_bytes(b"speech FRAMES=3")
    rows = [{"id": "a", "image": "p.png", "audio": "s.wav"}, {"id": "b", "image": "p.png", "audio": "s.wav"}]
    manifest = str(folder / "nightly.parquet")
    write_manifest(rows, manifest)
    return manifest


def test_official_policy_without_the_files_refuses_before_any_row_work(tmp_path: Path, fake_pipeline) -> None:
    out = tmp_path / "out"
    with pytest.raises(WeightsError, match=r"official weights missing.*weights fetch SadTalker_V0.0.2_256"):
        render_batch(manifest=_manifest(tmp_path / "in"), output=str(out), device="cpu", weights="official")
    assert not out.exists()  # no batch folder, no half-written results
    assert fake_pipeline.calls("extract_face") == [] and fake_pipeline.Models.instances == 0


def test_cli_exit_code_and_message_when_official_weights_are_missing(
    tmp_path: Path, fake_pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["run", _manifest(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", "official"])
    err = capsys.readouterr().err
    assert code == 2 and "the batch did not run: WeightsError" in err and "SadTalker_V0.0.2_256" in err


def test_official_policy_with_the_files_records_the_exact_set_per_row(
    tmp_path: Path, fake_pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(pipeline_fakes.OFFICIAL_ENV, "1")
    out = tmp_path / "out"
    assert cli_main(["run", _manifest(tmp_path / "in"), "-o", str(out), "--weights", "official"]) == 0
    printed = capsys.readouterr().out
    batch = next(out.glob("nightly-*"))
    results = pd.read_parquet(batch / "results.parquet")
    assert set(results["weights"]) == {"official:ffffffffffff+eeeeeeeeeeee"}
    assert not results["synthetic_weights"].any()
    assert "weights: official:ffffffffffff+eeeeeeeeeeee (policy official)" in printed
    record = json.loads((batch / "batch.json").read_text())
    assert record["weights"] == "official" and record["weights_check"]["policy"] == "official"
    assert record["weights_check"]["sets"] == {"256/crop": "official:ffffffffffff+eeeeeeeeeeee"}


@pytest.mark.parametrize("source", ["parameter", "environment"])
def test_synthetic_policy_reaches_every_worker_and_is_said(
    tmp_path: Path, fake_pipeline, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # Official files "present", yet the synthetic policy must win on every stage's worker.
    monkeypatch.setenv(pipeline_fakes.OFFICIAL_ENV, "1")
    kwargs: dict[str, Any] = {}
    if source == "parameter":
        kwargs["weights"] = "synthetic"
    else:
        monkeypatch.setenv("SADTALKER_WEIGHTS_POLICY", "synthetic")
    summary = render_batch(
        manifest=_manifest(tmp_path / "in"), output=str(tmp_path / "out"), device="cpu", **kwargs
    )
    assert summary.synthetic_weights and summary.weights_policy == "synthetic"
    assert summary.weights == ("synthetic:seed0:ffffffffffff+eeeeeeeeeeee",)
    assert set(fake_pipeline.Models._shared) == {"synthetic"}  # no worker built models under another policy
