"""Atomic local writes: a reader never sees half a file, and a failed write never replaces a good one.

The bytes go to a temporary in the target's folder (so on the same filesystem), are flushed to disk
(``fsync``), and the temporary is renamed onto the target (``os.replace``, atomic on POSIX). After a crash
the target holds either its old or its new content; a temporary may remain, never a partial target.

Every local file the project writes for others to read goes through :func:`atomic_path`. A writer that
must name its own temporary calls :func:`publish` for the last step: the video encoder (ffmpeg needs the
container's suffix, and its ``.sadtmp`` mark lets stale temporaries be swept) and the weights download
(its ``.partial`` file is resumed across attempts). Object stores are handled in ``sadtalker.storage``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "publish"]


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move the finished temporary ``tmp`` onto ``path`` (same folder), flushed to disk first."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary ``.<name>.<random>.tmp`` beside ``path`` (its folder created) for the block to write.

    When the block ends without an error the temporary is published onto ``path`` (:func:`publish`);
    otherwise ``path`` is left as it was. The temporary is removed in every case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        publish(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
