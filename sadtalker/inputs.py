"""A row's input files (``image``, ``audio``, ``ref_eyeblink``, ``ref_pose``): the allowed-prefix rule, and
opening them so that the file a worker reads is a file the rule allows.

The rule: an input must lie under one of the batch's allowed input prefixes. Local paths are compared after
resolving ``..`` and symlinks (:func:`canonical`), fsspec URLs normalised (:func:`within`: ``s3://b/media``
allows ``s3://b/media/a.png``, not ``s3://b/media-old/a.png``); :data:`ANY_PATH` (``*``) allows any path.
``manifests.validate`` applies it to every row before any work.

Validation looks at a path; a worker opens it later. A file swapped in between for a symlink out of the
prefixes (to ``/etc/passwd``) would pass the first and be read by the second (time of check, time of use).
:func:`localize_input` closes that gap where the tasks take a row's files: it opens a local file once,
checks the real path of the opened descriptor (``/proc/self/fd/N`` on Linux; elsewhere the resolved path,
trusted only when it is the very file that was opened: same device and inode), and copies the bytes from
that descriptor into the task's scratch folder. Everything downstream (hashes, the image decoder, ffmpeg,
which opens files by path itself) reads that private copy, so no later swap can reach it. A path that
already resolves outside is refused before it is opened at all; one swapped between that look and the
``open`` is opened (``O_NONBLOCK``: a FIFO does not block, no controlling terminal is taken) but refused
before any byte of it is read. Object stores (``s3://``) have no symlinks: their URLs are compared as they
are and downloaded as before.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sadtalker import storage, uris
from sadtalker.errors import InputError, OutsidePrefixesError
from sadtalker.redaction import redact

__all__ = [
    "ANY_PATH",
    "OUTSIDE",
    "InputFiles",
    "canonical",
    "checks_prefixes",
    "is_allowed",
    "localize_input",
    "opened_path",
    "within",
]

#: The ``allowed_prefixes`` entry that allows any path (``--allow-any-path``; one-machine use only).
ANY_PATH = "*"
#: The words of every refusal (validation's and the workers').
OUTSIDE = "outside the allowed input prefixes"
_CHANGED = f"{OUTSIDE} (changed after validation?)"
_CHUNK = 1 << 20
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def canonical(uri: str) -> str:
    """``uri`` normalised (:func:`sadtalker.uris.normalize`: ``..`` folded, no trailing slash); local
    paths also with every symlink resolved, so that what is compared is the file that would be opened."""
    norm = uris.normalize(uri)
    return os.path.realpath(norm) if uris.is_local(norm) else norm


def within(uri: str, prefix: str) -> bool:
    """Whether canonical ``uri`` lies under canonical ``prefix`` (or is it); ``*`` contains everything,
    ``s3://`` a whole store."""
    if prefix == ANY_PATH or uri == prefix:
        return True
    if prefix.endswith("://"):  # a whole store, e.g. "s3://"
        return uri.startswith(prefix)
    return uri.startswith(prefix.rstrip("/") + "/")


def is_allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether canonical ``uri`` lies under one of ``prefixes``."""
    return any(within(uri, prefix) for prefix in prefixes)


def checks_prefixes(prefixes: Sequence[str] | None) -> bool:
    """Whether ``prefixes`` restrict anything: not empty (a context without a batch: the one-pair CLI, a
    bench) and not :data:`ANY_PATH`."""
    return bool(prefixes) and ANY_PATH not in (prefixes or ())


def opened_path(fd: int, path: str) -> str | None:
    """The real path of the file open as ``fd`` (opened from ``path``); None when it cannot be told.

    Linux: the kernel's link ``/proc/self/fd/<fd>``, which names the opened file itself whatever happened
    to ``path`` since. Elsewhere (no ``/proc``), or for a file deleted since: ``path`` resolved now, trusted
    only when it is the same file (device and inode) as the one open.
    """
    with contextlib.suppress(OSError):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith("/") and not target.endswith(" (deleted)"):
            return target
    real = os.path.realpath(path)
    try:
        same = os.path.samestat(os.stat(real), os.fstat(fd))
    except OSError:
        return None
    return real if same else None


def _refuse(uri: str, where: str | None, allowed: Sequence[str]) -> OutsidePrefixesError:
    found = f"it resolves to {where}" if where else "where the opened file lies cannot be told"
    return OutsidePrefixesError(redact(uri), f"{_CHANGED}: {found}; allowed: {', '.join(allowed)}")


def localize_input(
    uri: str, dest_dir: str | os.PathLike[str], allowed_prefixes: Sequence[str] | None = ()
) -> Path:
    """A local file with the content of the row's input ``uri``, which must lie under ``allowed_prefixes``
    when it is opened (see the module docstring).

    Without a restriction (empty, or ``*``): :func:`sadtalker.storage.localize` (local files as they are).
    Otherwise a local file is opened, the real path of the opened descriptor checked, and its bytes copied
    from that descriptor to ``dest_dir/input-<random>/<its name>`` (the name is kept: decoders look at the
    extension); a URL is checked as it is and downloaded into ``dest_dir``.

    Raises:
        OutsidePrefixesError: the file (now) lies outside the prefixes: nothing of it was read.
        InputError: a local input that is not a regular file (a folder, a FIFO, a device).
        FileNotFoundError, PermissionError: as opening it raises them.
    """
    if not checks_prefixes(allowed_prefixes):
        return storage.localize(uri, dest_dir)
    allowed = tuple(dict.fromkeys(canonical(p) for p in allowed_prefixes or ()))
    if not uris.is_local(uri):
        if not is_allowed(canonical(uri), allowed):
            raise _refuse(uri, canonical(uri), allowed)
        return storage.download(uri, dest_dir)
    path = uris.local_path(uri)
    real = os.path.realpath(path)
    if not is_allowed(real, allowed):  # outside already: not even opened
        raise _refuse(uri, real, allowed)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        opened = opened_path(fd, path)
        if opened is None or not is_allowed(opened, allowed):
            raise _refuse(uri, opened, allowed)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(redact(uri), "not a regular file")
        folder = Path(tempfile.mkdtemp(prefix="input-", dir=dest_dir))
        target = folder / (os.path.basename(path) or "file")
        with open(target, "xb") as out:
            while chunk := os.read(fd, _CHUNK):
                out.write(chunk)
        return target
    finally:
        os.close(fd)


class InputFiles:
    """A task's row inputs made local (:meth:`localize`: :func:`localize_input` under ``allowed_prefixes``).

    As a context manager around the work on them: an :class:`InputError` raised inside about a local copy
    (``no face found``, ``unreadable audio``) is raised again naming the row's file instead of the copy.
    """

    def __init__(self, dest_dir: str | os.PathLike[str], allowed_prefixes: Sequence[str] | None = ()):
        self.dest_dir = Path(dest_dir)
        self.allowed_prefixes = tuple(allowed_prefixes or ())
        self._names: dict[str, str] = {}  # local copy -> the row's file

    def localize(self, uri: str) -> Path:
        """A local file with the content of the row's input ``uri`` (checked; see :func:`localize_input`)."""
        local = localize_input(uri, self.dest_dir, self.allowed_prefixes)
        if not uris.is_local(uri) or str(local) != uris.local_path(uri):
            self._names[str(local)] = uris.normalize(uri)
        return local

    def renamed(self, exc: InputError) -> InputError:
        """``exc`` naming the row's files instead of their local copies (``exc`` itself if it names none)."""

        def swap(text: str) -> str:
            for local in sorted(self._names, key=len, reverse=True):  # a longer name first: it may hold one
                text = text.replace(local, self._names[local])
            return text

        path, problem = swap(exc.path), swap(exc.problem)
        if (path, problem) == (exc.path, exc.problem):
            return exc
        try:
            return type(exc)(path, problem)
        except Exception:  # a subclass with another constructor: keep it as it is
            return exc

    def __enter__(self) -> InputFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, InputError) and self._names:
            renamed = self.renamed(exc)
            if renamed is not exc:
                raise renamed.with_traceback(tb) from None
