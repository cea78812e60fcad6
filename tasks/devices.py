"""The device a stage runs on, and the render slot that makes the renders of one GPU take turns."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

from sadtalker.timeouts import paused

__all__ = ["gpu_limit_name", "render_slot", "resolve_device"]


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
