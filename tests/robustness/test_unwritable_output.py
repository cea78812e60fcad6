"""An output location that cannot be written fails the batch before any row work, with a clear error
(fake pipeline; a path under a regular file stands in for a read-only mount: tests run as root, which
ignores permission bits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from manifests.build import write_manifest


def test_unwritable_output_fails_before_any_row_work(
    tmp_path: Path, fake_pipeline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.png").write_bytes(b"photo")
    (tmp_path / "s.wav").write_bytes(b"speech FRAMES=3")
    manifest = str(tmp_path / "m.parquet")
    write_manifest([{"id": "a", "image": "p.png", "audio": "s.wav"}], manifest)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    code = cli_main(["run", manifest, "--output", str(blocker / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "the batch did not run" in err and "not-a-folder" in err, err
    assert fake_pipeline.calls("extract_face") == []  # nothing rendered into the void
