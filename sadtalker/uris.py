"""Locations as strings: plain paths, ``file://`` URLs and fsspec URLs (``s3://bucket/key``), without I/O.

A plain path (``outputs/x``, ``/data/x``) is local and is made absolute; ``file:///data/x`` is local too;
anything with ``<protocol>://`` belongs to an fsspec filesystem (reached through ``sadtalker.storage``).
:func:`normalize` gives the one canonical form the pipeline compares and stores; :func:`resolve` resolves
a relative path against a base folder (the manifest's folder), keeping the base's protocol.
"""

from __future__ import annotations

import os
import posixpath

from fsspec.core import split_protocol

from sadtalker.redaction import redact

__all__ = ["LOCAL_PROTOCOLS", "is_local", "join", "local_path", "normalize", "parent", "protocol", "resolve"]

LOCAL_PROTOCOLS: frozenset[str] = frozenset({"file", "local"})


def protocol(uri: str) -> str:
    """The fsspec protocol of ``uri``: ``"file"`` for plain paths."""
    proto, _ = split_protocol(str(uri))
    return proto or "file"


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return protocol(uri) in LOCAL_PROTOCOLS


def local_path(uri: str) -> str:
    """The absolute local path of a plain path or ``file://`` URL."""
    if not is_local(uri):
        raise ValueError(f"not a local path: {redact(uri)}")
    _, path = split_protocol(str(uri))
    return os.path.abspath(os.path.expanduser(path))


def normalize(uri: str | os.PathLike[str]) -> str:
    """The canonical form used everywhere: absolute local paths, ``proto://bucket/key`` otherwise.

    ``..`` segments are folded; a trailing slash is dropped.
    """
    uri = os.fspath(uri)
    if is_local(uri):
        return local_path(uri)
    proto, path = split_protocol(uri)
    folded = posixpath.normpath(path) if path else ""
    if folded in (".", "/"):
        folded = ""
    return f"{proto}://{folded.lstrip('/')}"


def resolve(uri: str, base: str) -> str:
    """``uri`` made absolute: URLs and absolute paths as they are, relative paths against folder ``base``.

    ``resolve("a/x.png", "s3://bkt/manifests")`` is ``s3://bkt/manifests/a/x.png``;
    ``resolve("../x.wav", "/data/m")`` is ``/data/x.wav``.
    """
    uri = str(uri)
    if split_protocol(uri)[0] or os.path.isabs(os.path.expanduser(uri)):
        return normalize(uri)
    if is_local(base):
        return normalize(os.path.join(local_path(base), uri))
    proto, path = split_protocol(normalize(base))
    return normalize(f"{proto}://{posixpath.join(path, uri)}")


def join(prefix: str, *parts: str) -> str:
    """``prefix/part/...`` with the prefix's protocol (parts use ``/``)."""
    base = normalize(prefix)
    tail = "/".join(p.strip("/") for p in parts if p)
    if not tail:
        return base
    return normalize(posixpath.join(base, tail)) if is_local(base) else f"{base.rstrip('/')}/{tail}"


def parent(uri: str) -> str:
    """The folder holding ``uri`` (with its protocol)."""
    norm = normalize(uri)
    if is_local(norm):
        return os.path.dirname(norm)
    proto, path = split_protocol(norm)
    return f"{proto}://{posixpath.dirname(path)}"
