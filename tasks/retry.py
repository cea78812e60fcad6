"""Which failures a stage task retries (transient faults only) and the options every stage task shares."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from sadtalker.errors import InputError, SadTalkerError

__all__ = ["STAGE_TASK_OPTIONS", "is_transient", "retry_if_transient"]


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the call that raised ``exc`` could succeed.

    Never: :class:`InputError` (bad photo, no face, bad audio), missing files and refused permissions,
    and any error we do not know (a bug or a deterministic model failure fails fast with its message).
    Yes: ``SadTalkerError`` subclasses marked ``transient`` (downloads), connection and timeout errors,
    other ``OSError`` (storage I/O; s3fs reports remote failures as ``OSError``), and the network errors
    of botocore / aiohttp.
    """
    if isinstance(exc, SadTalkerError):
        return not isinstance(exc, InputError) and exc.transient
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    names = {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}
    return bool(names & {"botocore.exceptions.BotoCoreError", "aiohttp.client_exceptions.ClientError"})


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed with a transient fault."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by the failed state
        return is_transient(exc)
    return False


#: Options of every stage task (``@task(name=..., **STAGE_TASK_OPTIONS)``): 3 more tries after 2, 4 and 8 s
#: (+-50 % jitter) for transient faults only; no Prefect result cache or persistence (resume goes through
#: the artefacts in storage, see the stage tasks).
STAGE_TASK_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
