"""Content-addressed stage results in storage: computed once, reused by every later row and batch."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from sadtalker import storage
from sadtalker.timeouts import check_deadline

__all__ = ["cached_artefact", "key_lock"]

_KEY_LOCKS: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_KEY_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def key_lock(key: str) -> Iterator[None]:
    """Hold a process-wide lock for one cache key, so that rows of one process needing the same artefact
    (the same photo in two rows) compute it once: the second finds it in the cache. Processes and machines
    do not share it; a race between them costs a duplicate computation, never a wrong result (the
    artefact is content-addressed and written atomically)."""
    with _KEY_LOCKS_GUARD:
        lock = _KEY_LOCKS.get(key)
        if lock is None:
            lock = _KEY_LOCKS[key] = threading.Lock()
    with lock:
        yield


class _Artefact(Protocol):  # FaceRecord, Coefficients
    def save(self, path: str | Path) -> None: ...


A = TypeVar("A", bound=_Artefact)


def cached_artefact(
    key: str,
    cache_uri: str,
    copy_to: str | None,
    force: bool,
    scratch: Path,
    load: Callable[[Path], A],
    compute: Callable[[], A],
) -> tuple[A, bool]:
    """A content-addressed stage result: ``load`` it from ``cache_uri`` when it is there (unless
    ``force``), else ``compute`` it and upload it there atomically; then copy it to the row's
    ``copy_to`` (None: no copy). Returns the result and whether it was reused. Existence in storage is
    what makes a rerun resume, across processes and machines; :func:`key_lock` makes rows of one process
    share one computation."""
    with key_lock(key):
        reused = not force and storage.exists(cache_uri)
        if reused:
            result = load(storage.localize(cache_uri, scratch))
        else:
            check_deadline("out of time before computing it")  # e.g. slow downloads took it all
            result = compute()
            local = scratch / f"{key}.npz"
            result.save(local)
            storage.upload(local, cache_uri)
    if copy_to is not None:
        storage.copy(cache_uri, copy_to)
    return result, reused
