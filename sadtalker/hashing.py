"""SHA-256 of file contents: the one helper behind cache keys, weights verification and fingerprints."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO

from sadtalker import storage
from sadtalker.atomic import atomic_path

log = logging.getLogger(__name__)
_HEX = re.compile(r"[0-9a-f]{64}")

__all__ = ["sha256_file", "sha256_uri"]

_CHUNK = 1 << 20


def _digest(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str], remember: bool = False) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB chunks; computed once per process per (path, size,
    mtime), so the many rows sharing a photo or a weights file hash it once.

    ``remember=True`` (weight files: 725 MB, seconds to read at every process start): the digest is also
    kept beside the file in ``.<name>.sha256.json`` with the file's size, mtime and inode, and a later
    process that finds the file unchanged by those takes it from there instead of reading the file. A
    sidecar that does not match, or cannot be read or written (a read-only folder), only costs the full
    read. ``sadtalker weights list --hash`` always reads the files.
    """
    stat = os.stat(path)
    if not remember:
        return _sha256_cached(os.fspath(path), stat.st_size, stat.st_mtime_ns)
    sidecar = Path(path).with_name(f".{Path(path).name}.sha256.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    try:
        kept = json.loads(sidecar.read_text())
        if {k: kept.get(k) for k in key} == key and _HEX.fullmatch(str(kept.get("sha256", ""))):
            return str(kept["sha256"])
    except (OSError, ValueError):
        pass
    digest = _sha256_cached(os.fspath(path), stat.st_size, stat.st_mtime_ns)
    try:
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps({**key, "sha256": digest}))
    except OSError as exc:
        log.debug("SHA-256 of %s not kept in %s: %s", path, sidecar, exc)
    return digest


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return _digest(f)


def sha256_uri(uri: str) -> str:
    """Hex SHA-256 of the content at ``uri`` (any storage location), streamed in 1 MiB chunks."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f:
        return _digest(f)
