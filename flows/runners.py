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

__all__ = ["DEFAULT_WORKERS", "RunnerName", "STAGES_PER_ROW", "make_task_runner"]

RunnerName = Literal["threads", "dask"]
#: Tasks per row (face, coefficients, render, QC): threads a row in flight can hold.
STAGES_PER_ROW = 4
DEFAULT_WORKERS: dict[str, int] = {"threads": 2, "dask": 2}


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
