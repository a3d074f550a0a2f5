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


@task(name="brittleness", **CACHED_TASK)
def brittleness(sections: dict[str, Any], root: str, scores_hash: str) -> StageResult:
    """Predictions flipped after removing each attributor's top-k supporters (and k random points), retrained."""
    from kernelscope.counterfactual.stages import brittleness_stage

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
