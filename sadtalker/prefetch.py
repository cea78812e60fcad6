"""Run an iterator one item ahead in a background thread, so that producing the next item (a GPU render
batch) overlaps with consuming this one (resize, paste-back, encode).

Used by :func:`sadtalker.pipeline.render_video` on CUDA devices: there the renderer waits for the CPU work
on each batch unless it runs ahead (at 200 frames/s a 5 ms frame meets milliseconds of CPU work per frame).
On a CPU device the renderer already occupies every core, so nothing is gained and the render stays in the
caller's thread.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch(Generic[T]):
    """Iterate ``items`` with up to ``depth`` items produced ahead, in a daemon thread that runs in a copy
    of the caller's context (context variables such as a stage deadline carry over).

    The items come in order; an exception raised by ``items`` is raised here, at the item it replaced.
    :meth:`close` (also on ``with`` exit) stops the producer after the item it is making, then closes
    ``items`` in the caller's thread (a generator's ``finally`` runs there). Always close it (or use
    ``with``): the producer thread holds the object, so the collector never does.
    """

    def __init__(self, items: Iterable[T], depth: int = 1):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._items = iter(items)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._produce,), name="prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Queue ``item`` unless stopped first; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised where the item would have been
            self._put(_Failed(error))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finish()
            raise StopIteration
        if isinstance(item, _Failed):
            self._finish()
            raise item.error
        return item  # type: ignore[return-value]

    def _finish(self) -> None:
        self._finished = True
        self._thread.join()

    def close(self) -> None:
        """Stop producing (waits for the item being made), drop what was produced, close ``items``."""
        self._stop.set()
        self._thread.join()
        self._finished = True
        while not self._queue.empty():
            self._queue.get_nowait()
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
