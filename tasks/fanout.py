"""Fan-out of a flow's tasks: in the flow's process, on Prefect's thread pool, or on Dask (prefect-dask).

``params.scale.runner`` picks the engine for each flow run, so a run started from the UI can
choose it too. With ``dask`` the tasks go to a ``distributed.LocalCluster`` started for the run,
or to the scheduler at ``scale.dask_address`` (or ``KERNELSCOPE_DASK_ADDRESS``) of a cluster
that already exists; workers must see the project's files (same machine or a shared file system).
Results come back in submission order, so whatever ran where, the flow writes the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from kernelscope.core.param_sections import ScaleParams
from kernelscope.core.threads import fixed_threads
from tasks.caching import CacheLedger

DASK_ADDRESS_ENV = "KERNELSCOPE_DASK_ADDRESS"


def dask_address(scale: ScaleParams) -> str | None:
    return os.environ.get(DASK_ADDRESS_ENV) or scale.dask_address


def task_runner(scale: ScaleParams) -> TaskRunner | None:
    """The task runner for ``scale.runner``; None means run tasks in the flow's process."""
    if scale.runner == "sequential":
        return None
    if scale.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=scale.max_workers)
    from prefect_dask import DaskTaskRunner

    address = dask_address(scale)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(scale))


def local_cluster_kwargs(scale: ScaleParams) -> dict[str, Any]:
    """The LocalCluster of ``scale``: worker processes on loopback only (its scheduler and dashboard must not
    listen on a public address)."""
    return {
        "n_workers": scale.dask_workers,
        "threads_per_worker": scale.dask_threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }


@contextmanager
def torch_threads(scale: ScaleParams) -> Iterator[None]:
    """On a Dask worker, torch uses the worker's thread share instead of every core (restored afterwards)."""
    if scale.runner != "dask":
        yield
        return
    with fixed_threads(scale.dask_threads_per_worker):
        yield


class Pending:
    """A submitted task: its state when run in place, or its future on a runner."""

    def __init__(
        self, task: Any, kwargs: dict[str, Any], state: State | None = None, future: PrefectFuture | None = None
    ) -> None:
        self.task, self.kwargs, self.state, self.future = task, kwargs, state, future


class Fanout:
    """Submit tasks, then collect their results in order, counting cache hits in a ``CacheLedger``.

    Use as a context manager: it starts and stops the task runner (and a LocalCluster) around the work.
    """

    def __init__(self, scale: ScaleParams, ledger: CacheLedger | None = None) -> None:
        self.scale = scale
        self.ledger = ledger or CacheLedger()
        self.runner = task_runner(scale)

    def __enter__(self) -> Fanout:
        import torch

        self._threads = torch.get_num_threads()
        if self.scale.runner == "threads":
            # Tasks side by side in this process: each gets its share of the cores instead of oversubscribing them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.scale.max_workers))
        if self.runner is not None:
            self.runner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        try:
            if self.runner is not None:
                self.runner.__exit__(*exc)
        finally:
            torch.set_num_threads(self._threads)

    def run(self, task: Any, **kwargs: Any) -> Any:
        """Run one task in the flow's process (for the steps everything else waits on)."""
        return self.ledger(task, **kwargs)

    def submit(self, task: Any, **kwargs: Any) -> Pending:
        if self.runner is None:
            return Pending(task, kwargs, state=task(**kwargs, return_state=True))
        return Pending(task, kwargs, future=self.runner.submit(task, parameters=kwargs))

    def result(self, pending: Pending) -> Any:
        state = pending.state
        if pending.future is not None:
            pending.future.wait()
            state = pending.future.state
        return self.ledger.settle(pending.task, pending.kwargs, state)

    def map(self, task: Any, jobs: list[dict[str, Any]]) -> list[Any]:
        """Run ``task`` once per keyword set; results in the order of ``jobs``."""
        return [self.result(p) for p in [self.submit(task, **job) for job in jobs]]
