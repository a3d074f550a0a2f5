"""Tasks of the loss-kernel flow."""

from __future__ import annotations

from typing import Any

from prefect import task

from kernelscope.core.layout import RunLayout
from kernelscope.core.results import StageResult
from kernelscope.core.stage_reads import params_for
from kernelscope.loss_kernel.stages import loss_kernel_stage
from tasks.caching import CACHED_TASK


@task(name="sample-probe-losses", **CACHED_TASK)
def sample_probe_losses(sections: dict[str, Any], root: str, checkpoint_hash: str) -> StageResult:
    """SGLD around the checkpoint; per-sample losses of every train and test point at every draw; loss kernels."""
    return loss_kernel_stage(params_for(sections, "loss_kernel"), RunLayout(root))


@task(name="train-multitask-model", **CACHED_TASK)
def train_multitask_model(sections: dict[str, Any], root: str) -> StageResult:
    from pathlib import Path

    from kernelscope.loss_kernel.multitask_stages import multitask_train_stage

    return multitask_train_stage(params_for(sections, "multitask_train"), Path(root))


@task(name="multitask-loss-kernel", **CACHED_TASK)
def multitask_loss_kernel(sections: dict[str, Any], root: str, checkpoint_hash: str) -> StageResult:
    from pathlib import Path

    from kernelscope.loss_kernel.multitask_stages import multitask_loss_stage

    return multitask_loss_stage(params_for(sections, "multitask_loss_kernel"), Path(root))


@task(name="multitask-sweep-cell", **CACHED_TASK)
def sweep_cell(sections: dict[str, Any], root: str, checkpoint_hash: str) -> StageResult:
    """One grid cell of the sampler sweep: SGLD around one training seed's model, task separation, health."""
    from pathlib import Path

    from kernelscope.loss_kernel.sweep import sweep_cell_stage

    return sweep_cell_stage(params_for(sections, "multitask_sweep_cell"), Path(root))


@task(name="multitask-sweep-report", **CACHED_TASK)
def sweep_report(sections: dict[str, Any], root: str, cells: list[dict[str, Any]]) -> StageResult:
    """sweep.json and the AUC heat maps from every cell's summary."""
    from pathlib import Path

    from kernelscope.loss_kernel.sweep import sweep_report as report

    return report(params_for(sections, "multitask_sweep_report"), Path(root), cells)
