"""What every stage task shares: the pipeline module, the device, the render slot, retries and logging."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ParamSpec, Protocol, TypeVar

from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from sadtalker import storage
from sadtalker.errors import InputError, SadTalkerError
from sadtalker.timeouts import check_deadline, paused

__all__ = [
    "STAGE_TASK_OPTIONS",
    "cached_artefact",
    "gpu_limit_name",
    "is_transient",
    "key_lock",
    "logger",
    "pipeline",
    "redact_errors",
    "RedactedError",
    "render_slot",
    "resolve_device",
    "retry_if_transient",
    "models_module",
    "shared_models",
    "timed_stage",
]

P = ParamSpec("P")
R = TypeVar("R")


def pipeline() -> ModuleType:
    """``sadtalker.pipeline``, looked up at call time (imported on first use, so importing the tasks does
    not import torch). Orchestration tests put a fake module in ``sys.modules`` under this name."""
    return importlib.import_module("sadtalker.pipeline")


def models_module() -> ModuleType:
    """``sadtalker.loader``, looked up at call time like :func:`pipeline` (the same test seam)."""
    return importlib.import_module("sadtalker.loader")


def shared_models(weights_policy: str | None = None) -> Any:
    """The per-process ``sadtalker.loader.Models`` of the weights policy (networks load once per worker
    process and serve every row it runs); default policy ``$SADTALKER_WEIGHTS_POLICY`` or ``auto``."""
    return models_module().Models.shared(weights_policy)


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run; a plain logger when a task body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("sadtalker.batch")


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


class RedactedError(SadTalkerError):
    """Stands in for an exception whose message held a secret; keeps its transient / bad-input verdict."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def _redacted(exc: Exception) -> Exception:
    text = str(exc)
    clean = storage.redact(text)
    if clean == text:
        return exc
    if isinstance(exc, InputError):
        with contextlib.suppress(Exception):
            return type(exc)(storage.redact(exc.path), storage.redact(exc.problem))
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


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when this worker has a CUDA device (torch imported lazily), else
    ``"cpu"``; any other value is returned as it is."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_limit_name(device: str) -> str:
    """Name of the Prefect global concurrency limit of one GPU: ``gpu:<host>:<physical index>``.

    The index is mapped through ``CUDA_VISIBLE_DEVICES``, so workers pinned to different GPUs of one host
    get different limits, and workers sharing a GPU share one.
    """
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = visible[index] if index < len(visible) else str(index)
    return f"gpu:{socket.gethostname()}:{physical}"


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


class _Artefact(Protocol):  # sadtalker.records.FaceRecord, Coefficients; ReferenceCoefficients
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


_LIMITS_READY: set[str] = set()
_LIMITS_LOCK = threading.Lock()


def _ensure_gpu_limit(name: str) -> None:
    """Create global concurrency limit ``name`` with one slot unless it exists (an operator may have set
    another value on purpose, e.g. two renders per large GPU: that is kept)."""
    with _LIMITS_LOCK:
        if name in _LIMITS_READY:
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        _LIMITS_READY.add(name)


@contextlib.contextmanager
def render_slot(device: str) -> Iterator[dict[str, float]]:
    """Hold the render resource of ``device`` while rendering; yields ``{"wait": seconds waited}``.

    CUDA: one slot of the Prefect global concurrency limit :func:`gpu_limit_name` (created idempotently
    with 1 slot), so the renders of one GPU take turns across every process and machine using it, while
    the CPU stages of other rows go on. CPU: no Prefect limit, so the flow also runs on an ephemeral server
    with none configured (``render_video`` itself renders one clip at a time per process; run more
    processes, e.g. Dask workers, to render more at once).
    """
    timing = {"wait": 0.0}
    if not device.startswith("cuda"):
        yield timing
        return
    from prefect.concurrency.sync import concurrency

    start = time.perf_counter()
    name = gpu_limit_name(device)
    with contextlib.ExitStack() as held:
        with paused():  # waiting for the GPU does not count against the render's deadline
            _ensure_gpu_limit(name)
            held.enter_context(concurrency(name, occupy=1))
        timing["wait"] = time.perf_counter() - start
        yield timing
