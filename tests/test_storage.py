"""sadtalker.storage: URLs, atomic writes, hashing, downloads, credential redaction (local and memory://)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import fsspec
import pytest

from sadtalker import storage, uris
from sadtalker.hashing import sha256_file, sha256_uri
from sadtalker.redaction import install_log_redaction, redact

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_normalize_resolve_join_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert uris.normalize("out/x") == str(tmp_path / "out" / "x")
    assert uris.normalize("file:///data/a/../b/") == "/data/b"
    assert uris.normalize("s3://bkt/a/../b/") == "s3://bkt/b"
    assert uris.resolve("img/x.png", "s3://bkt/manifests") == "s3://bkt/manifests/img/x.png"
    assert uris.resolve("../x.wav", "/data/m") == "/data/x.wav"
    assert uris.resolve("s3://other/k.wav", "/data/m") == "s3://other/k.wav"
    assert uris.resolve("/abs/p.png", "s3://bkt/m") == "/abs/p.png"
    assert uris.resolve("file:///abs/p.png", "s3://bkt/m") == "/abs/p.png"
    assert uris.join("s3://b/out", "batch", "items/a") == "s3://b/out/batch/items/a"
    assert uris.join("/tmp/o", "b", "c.npz") == "/tmp/o/b/c.npz"
    assert uris.parent("s3://b/a/c.png") == "s3://b/a"
    assert uris.parent("/x/y/z.png") == "/x/y"
    assert uris.is_local("file:///x") and uris.is_local("rel") and not uris.is_local("s3://b/k")


def test_atomic_local_write_keeps_old_content_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "video.mp4"
    storage.write_bytes(str(target), b"good")
    assert target.read_bytes() == b"good"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        storage.write_bytes(str(target), b"bad")
    source = tmp_path / "new.bin"
    source.write_bytes(b"bad too")
    with pytest.raises(OSError, match="disk vanished"):
        storage.upload(source, str(target))
    monkeypatch.undo()
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in target.parent.iterdir()) == ["video.mp4"]  # no temporary files left


def test_memory_filesystem_round_trip(tmp_path: Path) -> None:
    """A protocol without atomic PUT goes through a temporary key + mv; copy, download, hash all work."""
    base = "memory://storage-test/run"
    data = os.urandom(3 * (1 << 20) + 123)  # more than one hashing chunk
    uri = storage.write_bytes(f"{base}/a.bin", data)
    assert storage.exists(uri) and not storage.exists(f"{base}/missing.bin")
    assert storage.read_bytes(uri) == data
    assert sha256_uri(uri) == hashlib.sha256(data).hexdigest()
    storage.copy(uri, f"{base}/b/c.bin")
    local = storage.download(f"{base}/b/c.bin", tmp_path)
    assert local.read_bytes() == data and sha256_file(local) == hashlib.sha256(data).hexdigest()
    assert storage.localize(f"{base}/b/c.bin", tmp_path) != local  # a second download keeps both files
    storage.upload(local, f"{base}/d.bin")
    storage.write_json(f"{base}/r.json", {"x": 1, "secret": "s"})
    assert storage.read_json(f"{base}/r.json") == {"x": 1, "secret": "***"}
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find("/storage-test") if p.endswith(".tmp")]


def test_localize_local_is_zero_copy(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(b"x")
    assert storage.localize(f"file://{f}", tmp_path / "elsewhere") == f


def test_storage_options_from_env_hold_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    options = storage.storage_options("s3://bkt/k")
    assert options == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
        "config_kwargs": {"connect_timeout": 120.0, "read_timeout": 120.0},  # StageTimeouts.io_s
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8333")
    assert storage.storage_options("s3://bkt/k")["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:8333"
    assert storage.storage_options("/local/x") == {}


def test_redact_text_and_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    text = (
        f"failed s3://AKIAXX:{SECRET}@bucket/x.png https://u:pw@host/y?X-Amz-Signature=abc123&x=1 "
        f"secret={SECRET[:10]} 'token': 'tok123' face_key=0123abcd row ok"
    )
    clean = redact(text)
    for leaked in (SECRET, "AKIAXX", "pw@", "abc123", "tok123", SECRET[:10]):
        assert leaked not in clean
    assert "face_key=0123abcd row ok" in clean and "x=1" in clean
    record = {"key": "AKIA", "secret": "s", "nested": {"aws_session_token": "t", "uri": "s3://b/k"}, "n": 3}
    assert redact(record) == {
        "key": "***",
        "secret": "***",
        "nested": {"aws_session_token": "***", "uri": "s3://b/k"},
        "n": 3,
    }
    assert redact(["a", (SECRET,)]) == ["a", ("***",)]
    assert redact("plain /data/x.png") == "plain /data/x.png"


def test_log_redaction_covers_messages_and_tracebacks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    install_log_redaction()
    install_log_redaction()  # idempotent
    log = logging.getLogger("test.redaction")
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        log.info("connecting with %s", SECRET)
        try:
            raise RuntimeError(f"bad url s3://k:{SECRET}@b/x")
        except RuntimeError:
            log.exception("failed")
    assert SECRET not in caplog.text
    assert "connecting with ***" in caplog.text and "RuntimeError" in caplog.text


def test_a_remembered_digest_is_used_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    """sha256_file(remember=True) keeps the digest beside the file; another process (a fresh in-process
    cache) takes it from there, but not after the file changed, and a wrong sidecar is never trusted
    beyond its key (size, mtime, inode)."""
    from sadtalker import hashing

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"a" * 1000)
    truth = hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashing.sha256_file(weights, remember=True) == truth
    sidecar = tmp_path / ".w.safetensors.sha256.json"
    kept = json.loads(sidecar.read_text())
    assert kept["sha256"] == truth and kept["size"] == 1000

    # A later process: the in-process cache is empty, the sidecar answers (a planted digest proves it).
    hashing._sha256_cached.cache_clear()
    sidecar.write_text(json.dumps({**kept, "sha256": "b" * 64}))
    assert hashing.sha256_file(weights, remember=True) == "b" * 64

    # The file changes (new size and mtime): the sidecar no longer matches, the file is read again.
    weights.write_bytes(b"c" * 999)
    assert hashing.sha256_file(weights, remember=True) == hashlib.sha256(b"c" * 999).hexdigest()
    # A corrupt sidecar, or a read-only folder, costs only the full read.
    sidecar.write_text("{not json")
    hashing._sha256_cached.cache_clear()
    assert hashing.sha256_file(weights, remember=True) == hashlib.sha256(b"c" * 999).hexdigest()
    assert hashing.sha256_file(weights) == hashlib.sha256(b"c" * 999).hexdigest()  # default: never a sidecar
