"""Tasks of the counterfactual flow: one per block of retrained models, one per attributor, then the LDS table;
brittleness and mislabel detection.

Each takes the counterfactual stage's params sections (core/stage_reads.py). A block's key holds the data's
hash; an attributor's the checkpoint's and the hashes of the kernel and kGLM files it reads, so a refitted
kGLM rescores exactly the attributors that read it.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from kernelscope.core.layout import RunLayout
from kernelscope.core.results import StageResult
from kernelscope.core.stage_reads import params_for
from tasks.caching import CACHED_TASK
from tasks.fanout import torch_threads


@task(name="retrain-block", **CACHED_TASK)
def retrain_block(sections: dict[str, Any], root: str, block: int, dataset_hash: str) -> StageResult:
    """counterfactual.models_per_stack models trained at once on their subsets; their test margins."""
    from kernelscope.counterfactual.stages import retrain_block_stage

    params = params_for(sections, "counterfactual_tasks")
    with torch_threads(params.scale):
        return retrain_block_stage(params, RunLayout(root), block)


@task(name="attribute", **CACHED_TASK)
def attribute(sections: dict[str, Any], root: str, name: str, inputs_hash: str) -> StageResult:
    """One attributor's (test, train) scores with its time and peak memory."""
    from kernelscope.counterfactual.stages import attribute_stage

    params = params_for(sections, "counterfactual_tasks")
    with torch_threads(params.scale):
        return attribute_stage(params, RunLayout(root), name)


@task(name="lds-table", cache_policy=NO_CACHE, persist_result=False)
def lds_table(sections: dict[str, Any], root: str) -> StageResult:
    """The LDS of every attributor with bootstrap intervals, lds.csv and the plots (cheap: never cached)."""
    from kernelscope.counterfactual.stages import lds_stage

    return lds_stage(params_for(sections, "counterfactual_tasks"), RunLayout(root))


@task(name="brittleness-plan", cache_policy=NO_CACHE, persist_result=False)
def brittleness_plan(sections: dict[str, Any], root: str) -> StageResult:
    """How many stacks of retrainings each k of counterfactual.brittleness_k takes (cheap: never cached)."""
    from kernelscope.counterfactual.brittleness_stages import brittleness_plan_stage

    return brittleness_plan_stage(params_for(sections, "counterfactual_tasks"), RunLayout(root))


@task(name="brittleness-stack", **CACHED_TASK)
def brittleness_stack(sections: dict[str, Any], root: str, k: int, stack: int, scores_hash: str) -> StageResult:
    """One stack of brittleness retrainings (without k points each), as a verified file."""
    from kernelscope.counterfactual.brittleness_stages import brittleness_stack_stage

    params = params_for(sections, "counterfactual_tasks")
    with torch_threads(params.scale):
        return brittleness_stack_stage(params, RunLayout(root), k, stack)


@task(name="brittleness", **CACHED_TASK)
def brittleness(sections: dict[str, Any], root: str, scores_hash: str) -> StageResult:
    """Predictions flipped after removing each attributor's top-k supporters (and k random points), from the
    stacks (any missing one is trained here)."""
    from kernelscope.counterfactual.brittleness_stages import brittleness_stage

    params = params_for(sections, "counterfactual_tasks")
    with torch_threads(params.scale):
        return brittleness_stage(params, RunLayout(root))


@task(name="mislabel-detection", **CACHED_TASK)
def mislabel(sections: dict[str, Any], root: str, checkpoint_hash: str) -> StageResult:
    """Labels flipped, a model retrained on them, and every attributor's self-scores ranked (ROC-AUC, top 10/20%)."""
    from kernelscope.counterfactual.stages import mislabel_stage

    params = params_for(sections, "counterfactual_tasks")
    with torch_threads(params.scale):
        return mislabel_stage(params, RunLayout(root))
