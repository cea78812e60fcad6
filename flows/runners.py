"""Task runners: threads in one process by default, Dask to scale out (no home-made scheduler).

- ``threads``: Prefect's ``ThreadPoolTaskRunner``. ``render_batch`` submits each row as a chain of four
  tasks (face -> coefficients -> render -> QC), so a row in flight holds up to four threads (three of them
  waiting on their upstream); ``workers`` rows are in flight at once (``4 * workers`` threads). Models are
  loaded once for the process and shared by every thread.
- ``dask``: ``DaskTaskRunner`` from prefect-dask. Without an address: a ``distributed.LocalCluster`` of
  ``workers`` processes (one thread each, bound to 127.0.0.1, no dashboard); each process loads the models
  once and serves every row it runs. With ``dask_address`` (``tcp://host:8786``): an existing cluster,
  e.g. one Dask worker per GPU started with ``CUDA_VISIBLE_DEVICES=<i> dask worker <scheduler>``.
"""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

__all__ = [
    "DEFAULT_WORKERS",
    "RunnerName",
    "STAGES_PER_ROW",
    "WINDOW_PER_WORKER",
    "default_window",
    "make_task_runner",
]

RunnerName = Literal["threads", "dask"]
#: Tasks per row (face, coefficients, render, QC): threads a row in flight can hold.
STAGES_PER_ROW = 4
DEFAULT_WORKERS: dict[str, int] = {"threads": 2, "dask": 2}
#: Rows submitted at once per worker (``render_batch``'s default window): one running, one queued behind it,
#: so a worker never idles between rows and a row's QC overlaps the next row's render.
WINDOW_PER_WORKER = 2


def make_task_runner(
    runner: RunnerName = "threads",
    *,
    workers: int | None = None,
    dask_address: str | None = None,
) -> TaskRunner:
    """The task runner for ``render_batch`` (see the module docstring); ``workers``: rows in flight
    (threads) or worker processes (a new LocalCluster)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if runner == "threads":
        if dask_address:
            raise ValueError("dask_address needs runner='dask'")
        return ThreadPoolTaskRunner(max_workers=STAGES_PER_ROW * (workers or DEFAULT_WORKERS["threads"]))
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": workers or DEFAULT_WORKERS["dask"],
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            },
        )
    raise ValueError(f"unknown runner {runner!r}: use 'threads' or 'dask'")


def default_window(runner: RunnerName, workers: int | None, task_runner: TaskRunner | None = None) -> int:
    """Rows ``render_batch`` keeps submitted at once when its ``window`` is not given:
    :data:`WINDOW_PER_WORKER` per worker (``workers``, else, on an existing Dask cluster, its worker
    threads, else :data:`DEFAULT_WORKERS`)."""
    slots = workers
    if slots is None and runner == "dask" and task_runner is not None:
        try:  # an existing cluster: as many slots as its workers have threads
            slots = sum(task_runner._client.nthreads().values()) or None  # type: ignore[attr-defined]
        except Exception:  # not started, or no client: the default below
            slots = None
    return WINDOW_PER_WORKER * (slots or DEFAULT_WORKERS.get(runner, 2))
