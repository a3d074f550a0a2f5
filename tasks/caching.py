"""Cache settings shared by every kernelscope task, and a guard against stale cache hits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.states import State

from kernelscope import ARTIFACT_FORMAT
from tasks.results import ResultJSON, guard

@dataclass
class ArtifactFormat(CachePolicy):
    """Part of every key: the version of the files the library writes (kernelscope.ARTIFACT_FORMAT).

    A task's own source rarely changes when the library under it starts writing files differently;
    bumping the format makes every cached result that points at an old-format file a miss.
    """

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any] | None, flow_parameters: dict[str, Any] | None, **kwargs: Any) -> str:
        return f"kernelscope-artifacts-{ARTIFACT_FORMAT}"


# A task's result is reused when its inputs, its source and the artifact format are unchanged, across processes.
CACHE_POLICY = INPUTS + TASK_SOURCE + ArtifactFormat()


def result_storage() -> Path:
    """Results persist under PREFECT_HOME (the project's .prefect folder by default)."""
    return Path(os.environ["PREFECT_HOME"]).resolve() / "kernelscope-results"


# Results persist as plain JSON (tasks.results), and every record is checked before Prefect parses it.
CACHED_TASK = dict(cache_policy=CACHE_POLICY, persist_result=True, result_storage=guard(result_storage()), result_serializer=ResultJSON())


def _paths_in(result: Any) -> list[Path]:
    if isinstance(result, dict):
        return [Path(v) for k, v in result.items() if k in ("path", "train", "test", "weights", "sidecar") and isinstance(v, str)]
    return []


class CacheLedger:
    """Runs tasks, counts cache hits, and refreshes a hit whose files were deleted since."""

    def __init__(self) -> None:
        self.hits = 0
        self.runs = 0

    def __call__(self, task: Any, **kwargs: Any) -> Any:
        state: State = task(**kwargs, return_state=True)
        return self.settle(task, kwargs, state)

    def settle(self, task: Any, kwargs: dict[str, Any], state: State) -> Any:
        """The result of a finished task run; a cache hit whose files are gone is run again."""
        result = state.result()
        if state.name == "Cached" and not all(p.exists() for p in _paths_in(result)):
            state = task.with_options(refresh_cache=True)(**kwargs, return_state=True)
            result = state.result()
        self.runs += 1
        self.hits += state.name == "Cached"
        return result
