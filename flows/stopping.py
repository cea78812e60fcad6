"""Stopping a batch early, cleanly: on SIGTERM / SIGINT, or when the storage is down.

A stopped batch submits no new row; the rows in flight finish (each within its stage time limits) and are
journaled; the flow then raises ``BatchStopped`` with what ran, what was saved and what was not, and writes
no ``results.parquet`` (that file means a finished batch). A rerun of the same manifest takes the journaled
rows and runs the rest (``flows.journal``).

- **Signals.** While the row loop runs in the main thread (the CLI, a flow run started by a worker), the
  first SIGTERM or SIGINT asks for a graceful stop; while stopping, each row that ends is journaled at
  once. A second one ends the process at once by the signal's default action (the rows in flight are
  lost; their finished stages are reused by the rerun), after sending SIGTERM to the process's children
  (the ephemeral Prefect server, encoders, Dask processes), which would otherwise outlive it. A
  cancellation that Prefect's runner drives (its control channel says so before it signals) goes to
  Prefect's own handler at once: Cancel in the UI means now.
- **Storage breaker.** :meth:`BatchStopper.row_ended` counts rows that failed in a row with a transient
  fault after their retries (connection refused, timeouts, a full disk); at ``limit`` the batch stops,
  instead of sending every remaining row through the same retries.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["BatchStopper"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _runner_is_cancelling() -> bool:
    """Whether Prefect's runner has announced the signal as its cancellation (a private API: False when it
    is not there)."""
    try:
        from prefect._internal import control_listener

        return control_listener.get_intent() is not None
    except Exception:
        return False


class BatchStopper:
    """Whether, and why, the batch should stop submitting rows.

    Attributes:
        reason: why the batch stops (None: it does not).
        signum: the signal that stopped it (None: not a signal).
        limit: rows failing in a row with a transient fault that open the breaker.
    """

    def __init__(self, limit: int):
        self.limit = max(int(limit), 1)
        self.reason: str | None = None
        self.signum: int | None = None
        self._streak = 0
        self._last_error = ""
        self._wake: Callable[[], None] = lambda: None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def on_wake(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called (from a signal handler: it must be reentrant) when a stop is asked."""
        self._wake = wake

    def row_ended(self, failed_transient: bool, error: str | None = None) -> None:
        """Count a row that ended (``failed_transient``: with a transient fault, after its retries)."""
        if not failed_transient:
            self._streak = 0
            return
        self._streak += 1
        self._last_error = error or ""
        if self._streak >= self.limit and self.reason is None:
            self.reason = (
                f"storage or network unavailable: {self._streak} rows in a row failed with a transient fault "
                f"after their retries (last: {self._last_error})"
            )

    def _handle(self, signum: int, frame: FrameType | None, previous: Any) -> None:
        if self.signum is not None:
            # The second signal: end the process now, by the signal's default action. Not by raising: the
            # task runner's exit, and the interpreter's, would wait for the rows in flight (a hung row
            # forever). While stopping, the flow journals each row as it ends, so nothing finished is lost.
            _terminate_children()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if _runner_is_cancelling() and callable(previous):  # Prefect's runner cancels: its bridge handles it
            signal.signal(signum, previous)
            previous(signum, frame)
            return
        self.signum = signum
        self.reason = f"{signal.Signals(signum).name} received"
        self._wake()

    @contextlib.contextmanager
    def signals(self) -> Iterator[BatchStopper]:
        """Handle SIGTERM and SIGINT as a graceful stop while the block runs (main thread only; elsewhere,
        signals are left as they are)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in _SIGNALS}
        handlers = {}
        for s in _SIGNALS:
            handlers[s] = lambda signum, frame, _p=previous[s]: self._handle(signum, frame, _p)
            signal.signal(s, handlers[s])
        try:
            yield self
        finally:
            for s in _SIGNALS:
                if signal.getsignal(s) is handlers[s]:  # not already handed back by a second signal
                    signal.signal(s, previous[s] if previous[s] is not None else signal.SIG_DFL)


def _child_pids() -> list[int]:
    """This process's child processes (Linux: ``/proc/<pid>/task/*/children``; elsewhere none)."""
    pids: set[int] = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with contextlib.suppress(OSError, ValueError), open(path) as handle:
            pids.update(int(pid) for pid in handle.read().split())
    return sorted(pids)


def _terminate_children() -> None:
    """SIGTERM to each child process. A process that ends by a signal's default action does not stop its
    children: the ephemeral Prefect server (about 250 MB) would run on, orphaned, after every hard stop."""
    for pid in _child_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
