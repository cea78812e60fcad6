"""The one storage layer: reading and writing by location, the same way for local folders and object stores.

Every byte the batch pipeline reads or writes goes through here, so local folders, ``file://`` URLs and
object stores (``s3://`` through s3fs; any other fsspec protocol) behave the same way. Locations are
strings handled by ``sadtalker.uris``; content hashes are ``sadtalker.hashing``; secrets are masked by
``sadtalker.redaction``. Nothing here imports Prefect.

Atomic writes (a reader never sees half a file; a failed write never replaces a good file)
    - local: ``sadtalker.atomic`` (a temporary ``.<name>.<random>.tmp`` beside the target, ``fsync``, then
      ``os.replace``: atomic on POSIX within one filesystem);
    - object stores (s3, gcs, azure): one PUT, or a multipart upload that only becomes visible when it is
      completed: the store itself swaps the object in whole, so we write the final key directly. A failed
      or interrupted upload leaves the previous object untouched;
    - any other fsspec protocol: write a temporary key beside the target, then ``fs.mv`` it into place.

Credentials
    Never passed around by this code. :func:`storage_options` only adds the S3 endpoint from
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; keys come from the standard chain of the SDK (for S3:
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and
    ``~/.aws/credentials``, instance roles) or from fsspec's own configuration (``FSSPEC_S3_*`` variables,
    ``~/.config/fsspec``). ``sadtalker.redaction.redact`` removes secrets from any text or record before it
    is logged or stored; the pipeline applies it to every log line, artifact and result it writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from sadtalker.atomic import atomic_path
from sadtalker.redaction import redact
from sadtalker.timeouts import io_timeout
from sadtalker.uris import is_local, join, local_path, normalize, protocol

__all__ = [
    "ATOMIC_PUT_PROTOCOLS",
    "check_writable",
    "copy",
    "download",
    "exists",
    "filesystem",
    "localize",
    "read_bytes",
    "read_json",
    "scratch_dir",
    "storage_options",
    "upload",
    "write_bytes",
    "write_json",
    "write_parquet",
]

#: Stores whose single PUT / completed multipart upload replaces an object atomically.
ATOMIC_PUT_PROTOCOLS: frozenset[str] = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})

# ---------------------------------------------------------------------------------------------------------
# Filesystems and credentials


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri`` from the environment, without credentials (see the module docstring).

    For ``s3://``: ``client_kwargs.endpoint_url`` from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
    (MinIO, SeaweedFS, R2, ...), and botocore's ``connect_timeout`` / ``read_timeout`` from the running
    stage's ``io_s`` (``sadtalker.timeouts.io_timeout``), so a stalled request fails (and is retried)
    instead of holding the stage. Keys stay with botocore's credential chain. Local files need no timeout.
    """
    options: dict[str, Any] = {}
    if protocol(uri) in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        seconds = io_timeout()
        options["config_kwargs"] = {"connect_timeout": seconds, "read_timeout": seconds}
    return options


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The (cached) fsspec filesystem for ``uri`` and the path inside it."""
    norm = normalize(uri)
    if is_local(norm):
        return fsspec.filesystem("file"), norm
    return url_to_fs(norm, **storage_options(norm))


def exists(uri: str) -> bool:
    """Whether ``uri`` exists now (listing caches are dropped first, so writes by other machines count)."""
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(uri: str) -> Any:
    """``uri`` parsed as JSON."""
    return json.loads(read_bytes(uri).decode("utf-8"))


# ---------------------------------------------------------------------------------------------------------
# Atomic writes


def _write_atomic(
    uri: str,
    write_local: Callable[[Path], object],
    put: Callable[[fsspec.AbstractFileSystem, str], object],
) -> str:
    """The one atomic-write path (see the module docstring): ``write_local(tmp_path)`` for local targets,
    ``put(fs, path)`` for fsspec ones. Returns the normalized URI."""
    norm = normalize(uri)
    if is_local(norm):
        with atomic_path(norm) as tmp:
            write_local(tmp)
        return norm
    fs, path = filesystem(norm)
    if protocol(norm) in ATOMIC_PUT_PROTOCOLS:
        put(fs, path)
    else:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        put(fs, tmp)
        fs.mv(tmp, path)
    fs.invalidate_cache(path)
    return norm


def write_bytes(uri: str, data: bytes) -> str:
    """Write ``data`` to ``uri`` atomically (see the module docstring); returns the normalized URI."""
    return _write_atomic(uri, lambda tmp: tmp.write_bytes(data), lambda fs, path: fs.pipe_file(path, data))


def write_parquet(uri: str, table: Any) -> str:
    """A pyarrow ``table`` as Parquet, written atomically to ``uri`` (its values redacted by whoever built
    it); returns the normalized URI."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return write_bytes(uri, sink.getvalue())


def check_writable(prefix: str) -> None:
    """Write and remove a small probe object under ``prefix``, so an output location that cannot be written
    (read-only mount, a file in the way, no bucket, refused credentials) is found before any work.

    Raises:
        OSError: naming the location and the underlying error (redacted).
    """
    probe = join(prefix, f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"probe")
        fs, path = filesystem(probe)
        fs.rm_file(path)
    except Exception as exc:  # any failure here means the batch could not save its work
        raise OSError(
            redact(f"output location {prefix} is not writable: {type(exc).__name__}: {exc}")
        ) from exc


def write_json(uri: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON, atomically, after :func:`redact`; returns the normalized URI."""
    return write_bytes(uri, (json.dumps(redact(obj), indent=2, sort_keys=True, default=str) + "\n").encode())


def upload(local: str | os.PathLike[str], uri: str) -> str:
    """Copy local file ``local`` to ``uri`` atomically; returns the normalized URI."""
    return _write_atomic(
        uri, lambda tmp: shutil.copyfile(local, tmp), lambda fs, path: fs.put_file(os.fspath(local), path)
    )


def copy(src: str, dst: str) -> str:
    """Copy ``src`` to ``dst`` atomically (server-side within one object store); returns ``dst``."""
    src_n, dst_n = normalize(src), normalize(dst)
    if is_local(src_n):
        return upload(src_n, dst_n)
    if protocol(src_n) == protocol(dst_n) and protocol(dst_n) in ATOMIC_PUT_PROTOCOLS:
        fs, src_path = filesystem(src_n)
        _, dst_path = filesystem(dst_n)
        fs.copy(src_path, dst_path)
        fs.invalidate_cache(dst_path)
        return dst_n
    with tempfile.TemporaryDirectory(prefix="sadtalker-copy-") as tmp:
        return upload(download(src_n, tmp), dst_n)


# ---------------------------------------------------------------------------------------------------------
# Local copies


def download(uri: str, dest_dir: str | os.PathLike[str]) -> Path:
    """Copy ``uri`` into local folder ``dest_dir`` (keeping its file name); returns the local path."""
    fs, path = filesystem(uri)
    target = Path(dest_dir) / (posixpath.basename(path.rstrip("/")) or "file")
    if target.exists():  # two inputs with one name: keep both
        target = target.with_name(f"{uuid.uuid4().hex[:8]}-{target.name}")
    fs.get_file(path, os.fspath(target))
    return target


def localize(uri: str, dest_dir: str | os.PathLike[str]) -> Path:
    """A local path with the content of ``uri``: local files as they are (no copy), others downloaded."""
    return Path(local_path(uri)) if is_local(uri) else download(uri, dest_dir)


@contextlib.contextmanager
def scratch_dir(prefix: str = "sadtalker-task-") -> Iterator[Path]:
    """A local temporary folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
