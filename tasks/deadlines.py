"""Each stage task body runs inside its row's deadline (``sadtalker.timeouts``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["timed_stage"]

P = ParamSpec("P")
R = TypeVar("R")


def timed_stage(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Task-body decorator: the body runs inside its row's deadline for ``stage`` (``ctx.timeouts``, see
    ``sadtalker.timeouts``; the render's limit scales with ``coeffs.num_frames``). Below it, ffmpeg runs at
    most until the deadline, the renderer stops at the first batch past it and storage requests time out
    after ``io_s``; the row then fails with ``StageTimeout: <stage> of row <id> exceeded <n> s (...)``,
    which is never retried. Waiting for a GPU slot or the process's renderer does not count."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs).arguments
            row, ctx = bound["row"], bound["ctx"]
            frames = getattr(bound.get("coeffs"), "num_frames", None) if stage == "render" else None
            with ctx.timeouts.deadline(stage, f"row {row.id}", frames):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
