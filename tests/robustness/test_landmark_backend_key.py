"""Issue 11, finding 5: the face cache key names the landmark backend and its weights.

A worker that falls back from face-alignment to dlib (its weights missing) must neither reuse nor poison
the faces another backend cached under the same photo; every row's results say which backend found its
face. Keys are checked directly, and through the batch with the fake pipeline (tests/pipeline_fakes.py:
``$PIPELINE_FAKES_LANDMARKER`` picks the backend a fake worker's ``Models`` reports).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pipeline_fakes
import pytest

import flows  # noqa: F401  (offline Prefect settings first)
from flows.render_batch import RESULT_SCHEMA, render_batch
from manifests.build import write_manifest
from manifests.schema import ManifestRow
from sadtalker.records import FaceRecord
from tasks.keys import coeffs_key, face_key, render_key

WEIGHTS = {"sha256": {"SadTalker_V0.0.2_256.safetensors": "1" * 64}, "synthetic": False}
FAN = {"backend": "face-alignment", "weights": "a" * 64}
DLIB = {"backend": "dlib", "weights": "b" * 64}


def test_face_key_depends_on_the_landmark_backend_and_its_weights() -> None:
    options = ManifestRow(id="a", image="x", audio="y").to_options()
    refs = {"ref_eyeblink": None, "ref_pose": None}
    fan, dlib = face_key("p" * 64, options, WEIGHTS, FAN), face_key("p" * 64, options, WEIGHTS, DLIB)
    assert fan != dlib
    assert fan == face_key("p" * 64, options, WEIGHTS, dict(FAN))  # stable
    assert fan != face_key("p" * 64, options, WEIGHTS, {**FAN, "weights": "c" * 64})  # other FAN files
    # the coefficient and video keys derive from the face key, so they differ too
    c_fan = coeffs_key(fan, "s" * 64, options, refs, WEIGHTS)
    c_dlib = coeffs_key(dlib, "s" * 64, options, refs, WEIGHTS)
    assert c_fan != c_dlib
    assert render_key(fan, c_fan, "p" * 64, options, WEIGHTS) != render_key(
        dlib, c_dlib, "p" * 64, options, WEIGHTS
    )


def test_results_schema_has_the_landmark_backend() -> None:
    assert "landmark_backend" in RESULT_SCHEMA.names


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("PIPELINE_FAKES_LANDMARKER", raising=False)
    yield from pipeline_fakes.use_in_test(monkeypatch)


def _worker(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """A fresh worker process whose landmarker is ``backend`` (its models are built anew)."""
    monkeypatch.setenv("PIPELINE_FAKES_LANDMARKER", backend)
    pipeline_fakes.reset()


def test_workers_with_different_backends_do_not_share_cached_faces(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "p.png").write_bytes(b"photo")
    (folder / "s.wav").write_bytes(b"speech FRAMES=3")
    manifest = str(folder / "m.parquet")
    write_manifest([{"id": "a", "image": "p.png", "audio": "s.wav"}], manifest)
    cache = str(tmp_path / "cache")

    def run(backend: str, output: str) -> pd.Series:
        _worker(monkeypatch, backend)
        summary = render_batch(
            manifest=manifest, output=str(tmp_path / output), cache=cache, device="cpu", workers=1
        )
        assert summary.ok, summary.failures
        return pd.read_parquet(summary.results_uri).set_index("id").loc["a"]

    fan = run("face-alignment", "out-fan")
    assert fake_pipeline.calls("extract_face") == ["p.png"]
    dlib = run("dlib", "out-dlib")  # the fallback worker: same photo, same cache
    assert fake_pipeline.calls("extract_face") == ["p.png"], "the dlib worker reused the FAN face"
    assert not dlib["face_reused"] and dlib["face_key"] != fan["face_key"]
    assert dlib["coeffs_key"] != fan["coeffs_key"] and dlib["render_key"] != fan["render_key"]
    assert (fan["landmark_backend"], dlib["landmark_backend"]) == ("face-alignment", "dlib")
    # each cache entry holds the face its own backend found (the dlib worker did not overwrite FAN's)
    for row, backend in ((fan, "face-alignment"), (dlib, "dlib")):
        assert FaceRecord.load(Path(cache) / "face" / f"{row['face_key']}.npz").backend == backend
    again = run("face-alignment", "out-fan-again")  # back on FAN: its own entry is reused
    assert bool(again["face_reused"]) and again["face_key"] == fan["face_key"]
    assert fake_pipeline.calls("extract_face") == [] and again["landmark_backend"] == "face-alignment"
