"""Cache settings shared by every kernelscope task, and a guard against stale cache hits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.states import State

from kernelscope import ARTIFACT_FORMAT
from kernelscope.core.results import StageResult
from tasks.results import ResultJSON, guard


@dataclass
class ArtifactFormat(CachePolicy):
    """Part of every key: the version of the files the library writes (kernelscope.ARTIFACT_FORMAT).

    A task's own source rarely changes when the library under it starts writing files differently;
    bumping the format makes every cached result that points at an old-format file a miss.
    """

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None, **kwargs: Any
    ) -> str:
        return f"kernelscope-artifacts-{ARTIFACT_FORMAT}"


# A task's result is reused when its inputs, its source and the artifact format are unchanged, across processes.
CACHE_POLICY = INPUTS + TASK_SOURCE + ArtifactFormat()


def result_storage() -> Path:
    """Results persist under PREFECT_HOME (the project's .prefect folder by default)."""
    return Path(os.environ["PREFECT_HOME"]).resolve() / "kernelscope-results"


# Results persist as plain JSON (tasks.results), and every record is checked before Prefect parses it.
CACHED_TASK = dict(
    cache_policy=CACHE_POLICY,
    persist_result=True,
    result_storage=guard(result_storage()),
    result_serializer=ResultJSON(),
)


def cached_except(*inputs: str) -> dict[str, Any]:
    """CACHED_TASK with ``inputs`` left out of the key (data the flow hands over that the key must not hash)."""
    policy = CACHE_POLICY
    for name in inputs:
        policy = policy - name
    return {**CACHED_TASK, "cache_policy": policy}


def stale_outputs(result: Any) -> list[str]:
    """Why a cached result cannot be trusted: the outputs that are missing or changed, each as a reason.

    Every cached task returns a StageResult, whose outputs are every file its stage wrote with their hashes;
    a cached value of any other type has nothing to be checked against, so it is not trusted either.
    """
    if not isinstance(result, StageResult):
        return [f"a {type(result).__name__}, not a StageResult"]
    return [output.path for output in result.stale()]


class CacheLedger:
    """Runs tasks, counts cache hits, and runs again a hit whose output files were deleted or changed since."""

    def __init__(self) -> None:
        self.hits = 0
        self.runs = 0

    def __call__(self, task: Any, **kwargs: Any) -> Any:
        state: State = task(**kwargs, return_state=True)
        return self.settle(task, kwargs, state)

    def settle(self, task: Any, kwargs: dict[str, Any], state: State) -> Any:
        """The result of a finished task run; a cache hit whose outputs are not all there, unchanged, is run again."""
        result = state.result()
        stale = stale_outputs(result) if state.name == "Cached" else []
        if stale:
            get_run_logger().info(
                "%s: cached result not trusted (%s); running it again", task.name, ", ".join(stale[:3])
            )
            state = task.with_options(refresh_cache=True)(**kwargs, return_state=True)
            result = state.result()
        self.runs += 1
        self.hits += state.name == "Cached"
        return result
