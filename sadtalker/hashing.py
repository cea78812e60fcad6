"""SHA-256 of file contents: the one helper behind cache keys, weights verification and fingerprints."""

from __future__ import annotations

import functools
import hashlib
import os
from typing import BinaryIO

from sadtalker import storage

__all__ = ["sha256_file", "sha256_uri"]

_CHUNK = 1 << 20


def _digest(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB chunks; computed once per process per (path, size,
    mtime), so the many rows sharing a photo or a weights file hash it once."""
    stat = os.stat(path)
    return _sha256_cached(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return _digest(f)


def sha256_uri(uri: str) -> str:
    """Hex SHA-256 of the content at ``uri`` (any storage location), streamed in 1 MiB chunks."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f:
        return _digest(f)
