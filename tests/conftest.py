"""Fixtures and the environment of the test session (tool homes in a temporary folder, torch threads).

Shared test code (TINY_PARAMS, REPO, the tiny-run factory, fault helpers) lives in tests/support/.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.runs import TINY_PARAMS, TinyRun, TinyRuns

# Tool homes for the whole test session live in a temporary folder, never in the repo. Under pytest-xdist
# (`make test` runs two workers) each worker gets a folder of its own: two Prefect servers or MLflow stores on
# one SQLite file would lock each other out, so a worker overrides what the controller process set.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_OWNS_HOME = "KERNELSCOPE_TEST_HOME" not in os.environ  # this process made the folder, so it removes it at the end
_HOME = Path(
    os.environ.setdefault(
        "KERNELSCOPE_TEST_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"kernelscope-tests-{os.getpid()}")
    )
)
_SESSION_HOME = _HOME / (_WORKER or "main")


def _session_env(name: str, value: str) -> None:
    if _WORKER:
        os.environ[name] = value
    else:
        os.environ.setdefault(name, value)


_session_env("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
_session_env("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_HOME / 'mlflow.db'}")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
_SESSION_HOME.mkdir(parents=True, exist_ok=True)

# The longest modules first (about 1 to 3.5 minutes each on two cores): with two workers taking whole modules
# (--dist loadscope --no-loadscope-reorder: in this order, not by test count), a long one started last would leave
# the other worker idle at the end.
SLOWEST_FIRST = (
    "integration/test_dvc_pipeline.py",
    "integration/test_services.py",
    "integration/test_flow_concurrency.py",
    "integration/test_cached_results.py",
    "integration/test_worked_example.py",
    "integration/test_dask_scaleout.py",
    "integration/test_prefect_flow.py",
)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWNS_HOME and not _WORKER:  # the controller, after every worker has finished
        shutil.rmtree(_HOME, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        hits = [i for i, suffix in enumerate(SLOWEST_FIRST) if path.endswith(suffix)]
        return hits[0] if hits else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module and among the rest is kept


# One torch thread per xdist worker: two workers at two OpenMP threads each on two cores wait at every barrier
# (tests/kernels, models, surrogate and counterfactual took 80 s that way, 24 s at one thread each).
torch.set_num_threads(1 if _WORKER else min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness (a temporary API server and database), started once per test process that asks for
    it and kept to the end of the session: each start costs ~30 s on two cores."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def tiny_params_dict() -> dict:
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("tiny-runs"))


@pytest.fixture
def tiny_run(tiny_runs: TinyRuns, tmp_path: Path) -> Callable[..., TinyRun]:
    """``tiny_run(stages=("data", "train"), **overrides)``: a private copy (under tmp_path) of the tiny run of those
    stages on TINY_PARAMS merged with ``overrides``, built once per session (tests/support/runs.py)."""
    names = (f"run-{i}" if i else "run" for i in itertools.count())

    def make(stages: Sequence[str] = ("data", "train"), **overrides: Any) -> TinyRun:
        return tiny_runs.copy(stages, overrides, tmp_path / next(names))

    return make
