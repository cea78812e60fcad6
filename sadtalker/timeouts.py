"""Time limits: one budget per stage, the running stage's deadline, and the helpers that enforce it.

A stage runs inside :func:`stage_deadline` (the batch tasks and :func:`sadtalker.pipeline.render_pair` open
one); the deadline lives in a context variable, so the code below the stage needs no extra argument:

- every ffmpeg / ffprobe process (``sadtalker.video.ffmpeg``: probe, mux, audio decode, the encoder pipe, QC
  decoding) runs at most until the deadline, then its whole process group is killed and reaped;
- the renderer checks it between generator batches (:func:`within_deadline`);
- waiting for the process's renderer or a GPU slot does not count (:meth:`Deadline.paused`);
- storage calls get connect / read timeouts of ``io_s`` (:func:`io_timeout`, read by ``sadtalker.storage``).

A limit is enforced only where the stage can be stopped cleanly; a stage that finished is never failed
afterwards for its time. Nothing here imports Prefect or torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sadtalker.errors import StageTimeout

__all__ = [
    "STAGES",
    "Deadline",
    "StageTimeouts",
    "check_deadline",
    "current_deadline",
    "effective_limit",
    "io_scope",
    "io_timeout",
    "paused",
    "stage_deadline",
    "within_deadline",
]

T = TypeVar("T")

#: The stages that have a limit (``failed_stage`` of the batch results).
STAGES: tuple[str, ...] = ("face", "coeffs", "render", "qc")


def _secs(value: float) -> str:
    """``123`` / ``0.25`` / ``660.5``: seconds for messages, without noise digits."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class StageTimeouts:
    """Time limits of a batch's stages, in seconds (all configurable: flow parameter ``timeouts``,
    ``sadtalker-batch run --timeout NAME=SECONDS``, ``sadtalker render --timeout NAME=SECONDS``).

    Defaults are generous for CPU workers (2 cores: ~12 s per 256 px frame, ~4x that at 512 px), so on a
    GPU they only catch real hangs; a GPU deployment may lower ``render_per_frame_s`` (e.g. to 5).

    Attributes:
        face_s: photo -> crop + 3DMM, downloads included.
        coeffs_s: speech -> coefficients (audio decoding included).
        render_base_s, render_per_frame_s: the render + encode of a T-frame clip may take
            ``render_base_s + T * render_per_frame_s`` (waiting for the renderer or a GPU slot not counted).
        qc_s: decoding the written video back and every QC check on it.
        io_s: connect and read timeout of each storage request (S3: botocore's ``connect_timeout`` /
            ``read_timeout``); a stalled request fails with a transient error and is retried.
    """

    face_s: float = 600.0
    coeffs_s: float = 900.0
    render_base_s: float = 600.0
    render_per_frame_s: float = 60.0
    qc_s: float = 1800.0
    io_s: float = 120.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"timeout {field.name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"timeout {field.name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, field.name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> StageTimeouts:
        """The defaults with ``values`` (``{"render_per_frame_s": 30}``) applied.

        Raises:
            ValueError: an unknown name (every one is reported, with the valid names) or a value that is
                not a positive finite number.
        """
        values = dict(values or {})
        unknown = sorted(str(name) for name in values if name not in cls.names())
        if unknown:
            raise ValueError(
                f"unknown timeout{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                f"use {', '.join(cls.names())}"
            )
        converted: dict[str, float] = {}
        for name, value in values.items():
            try:
                converted[name] = float(value) if not isinstance(value, bool) else value
            except (TypeError, ValueError):
                raise ValueError(f"timeout {name} must be a number of seconds, got {value!r}") from None
        return cls(**converted)

    @classmethod
    def parse_items(cls, items: Sequence[str]) -> dict[str, float]:
        """Command-line ``NAME=SECONDS`` items (``["render_per_frame_s=30", "qc_s=600"]``) as checked
        overrides ``{"render_per_frame_s": 30.0, "qc_s": 600.0}`` (a later item wins)."""
        values: dict[str, str] = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"--timeout {item!r}: expected NAME=SECONDS, e.g. render_per_frame_s=30")
            values[name.strip()] = value.strip()
        limits = cls.from_mapping(values)
        return {name: getattr(limits, name) for name in values}

    @classmethod
    def parse(cls, items: Sequence[str]) -> StageTimeouts:
        """The defaults with command-line ``NAME=SECONDS`` items applied (:meth:`parse_items`)."""
        return cls.from_mapping(cls.parse_items(items))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def limit(self, stage: str, frames: int | None = None) -> tuple[float, str | None]:
        """``(seconds, how they were computed)`` for ``stage``; the render's scales with ``frames``."""
        if stage == "render":
            frames = int(frames or 0)
            seconds = self.render_base_s + frames * self.render_per_frame_s
            base, per_frame = _secs(self.render_base_s), _secs(self.render_per_frame_s)
            detail = f"{frames} frames: {base} s + {per_frame} s/frame"
            return seconds, detail
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
        return float(getattr(self, f"{stage}_s")), None

    def deadline(
        self, stage: str, subject: str, frames: int | None = None
    ) -> contextlib.AbstractContextManager[Deadline]:
        """:func:`stage_deadline` of ``stage`` under these limits (``io_s`` included)."""
        seconds, detail = self.limit(stage, frames)
        return stage_deadline(stage, subject, seconds, detail=detail, io_s=self.io_s)


class Deadline:
    """The deadline of one running stage: ``limit_s`` seconds from its start, paused time not counted."""

    def __init__(self, stage: str, subject: str, limit_s: float, detail: str | None = None):
        self.stage = stage
        self.subject = subject
        self.limit_s = float(limit_s)
        self.detail = detail
        self._end = time.monotonic() + self.limit_s
        self._pauses = 0
        self._paused_at = 0.0

    def remaining(self) -> float:
        """Seconds left (never below 0); the full remainder while paused."""
        now = self._paused_at if self._pauses else time.monotonic()
        return max(0.0, self._end - now)

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def error(self, during: str | None = None) -> StageTimeout:
        """The typed error: ``render of row x exceeded 123 s (13 frames: 60 s + 5 s/frame); <during>``."""
        message = f"{self.stage} of {self.subject} exceeded {_secs(self.limit_s)} s"
        if self.detail:
            message += f" ({self.detail})"
        if during:
            message += f"; {during}"
        return StageTimeout(message, stage=self.stage, limit_s=self.limit_s)

    def check(self, during: str | None = None) -> None:
        """Raise :class:`StageTimeout` if the deadline has passed."""
        if self.expired:
            raise self.error(during)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count (waiting for the renderer lock or a GPU slot)."""
        if self._pauses == 0:
            self._paused_at = time.monotonic()
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0:
                self._end += time.monotonic() - self._paused_at


_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("deadline", default=None)
_IO_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar("io_timeout", default=None)


@contextlib.contextmanager
def stage_deadline(
    stage: str, subject: str, limit_s: float, detail: str | None = None, io_s: float | None = None
) -> Iterator[Deadline]:
    """Run the block as stage ``stage`` of ``subject`` (``"row a"``) with ``limit_s`` seconds; ``io_s``:
    the storage timeouts inside. Nested scopes replace the outer one while they run."""
    deadline = Deadline(stage, subject, limit_s, detail)
    token = _DEADLINE.set(deadline)
    io_token = _IO_TIMEOUT.set(io_s) if io_s is not None else None
    try:
        yield deadline
    finally:
        if io_token is not None:
            _IO_TIMEOUT.reset(io_token)
        _DEADLINE.reset(token)


def current_deadline() -> Deadline | None:
    """The running stage's deadline, or None outside any stage."""
    return _DEADLINE.get()


def check_deadline(during: str | None = None) -> None:
    """Raise :class:`StageTimeout` when the running stage is past its deadline (no-op outside a stage)."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        deadline.check(during)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Pause the running stage's deadline (if any) while waiting for a shared resource."""
    deadline = _DEADLINE.get()
    if deadline is None:
        yield
        return
    with deadline.paused():
        yield


def within_deadline(items: Iterable[T], during: str | Callable[[], str] | None = None) -> Iterator[T]:
    """``items``, checking the running stage's deadline before each next one is produced (between render
    batches: a long clip stops at the first batch boundary past its deadline). ``during``: what the error
    adds, or a function that says it (``lambda: f"stopped after {n} of {total} frames"``)."""
    iterator = iter(items)
    try:
        while True:
            deadline = _DEADLINE.get()
            if deadline is not None and deadline.expired:
                raise deadline.error(during() if callable(during) else during)
            try:
                item = next(iterator)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def effective_limit(timeout: float | None = None) -> tuple[float | None, Deadline | None]:
    """How long a blocking call (a subprocess) may take: ``timeout`` or the running stage's remaining time,
    whichever is shorter. Returns ``(seconds or None, the deadline when it is the binding limit)``."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout, None
    remaining = deadline.remaining()
    if timeout is not None and timeout < remaining:
        return timeout, None
    return remaining, deadline


@contextlib.contextmanager
def io_scope(io_s: float) -> Iterator[None]:
    """Storage requests inside the block (outside any stage: a flow's own manifest, journal and results
    I/O) get connect / read timeouts of ``io_s``."""
    token = _IO_TIMEOUT.set(io_s)
    try:
        yield
    finally:
        _IO_TIMEOUT.reset(token)


def io_timeout() -> float:
    """Connect / read timeout of storage requests: the running stage's ``io_s``, else the default."""
    value = _IO_TIMEOUT.get()
    return float(value) if value is not None else StageTimeouts.io_s
