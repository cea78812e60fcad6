"""Logging from stage tasks, and their errors made safe to log: no secret reaches Prefect or the results."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from sadtalker.errors import InputError, SadTalkerError
from sadtalker.redaction import redact
from tasks.retry import is_transient

__all__ = ["RedactedError", "logger", "redact_errors"]

P = ParamSpec("P")
R = TypeVar("R")


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run; a plain logger when a task body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("sadtalker.batch")


class RedactedError(SadTalkerError):
    """Stands in for an exception whose message held a secret; keeps its transient / bad-input verdict."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def _redacted(exc: Exception) -> Exception:
    text = str(exc)
    clean = redact(text)
    if clean == text:
        return exc
    if isinstance(exc, InputError):
        with contextlib.suppress(Exception):
            return type(exc)(redact(exc.path), redact(exc.problem))
    return RedactedError(f"{type(exc).__name__}: {clean}", transient=is_transient(exc))


def redact_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Task-body decorator: an exception whose message would show a secret is re-raised redacted (so the
    secret never reaches Prefect's state messages, logs or the batch results); others pass unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            clean = _redacted(exc)
            if clean is exc:
                raise
            raise clean.with_traceback(exc.__traceback__) from None

    return wrapper
