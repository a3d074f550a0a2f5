"""Tasks of the forensics flow: thin cached wrappers over kernelscope.forensics.stages."""

from __future__ import annotations

from typing import Any

from prefect import task

from kernelscope.core.layout import RunLayout
from kernelscope.core.results import StageResult
from kernelscope.core.stage_reads import params_for
from kernelscope.forensics.stages import (
    detection_stage,
    forensic_kernel_stage,
    forensic_kglm_stage,
    poison_stage,
    poisoned_train_stage,
)
from tasks.caching import CACHED_TASK


@task(name="poison-data", **CACHED_TASK)
def poison_data(sections: dict[str, Any], root: str) -> StageResult:
    return poison_stage(params_for(sections, "poison"), RunLayout(root))


@task(name="train-poisoned-model", **CACHED_TASK)
def train_poisoned(sections: dict[str, Any], root: str, dataset_hash: str) -> StageResult:
    return poisoned_train_stage(params_for(sections, "poison_train"), RunLayout(root))


@task(name="assemble-forensic-kernel", task_run_name="assemble-forensic-kernel-{kind}", **CACHED_TASK)
def assemble_forensic_kernel(sections: dict[str, Any], root: str, kind: str, checkpoint_hash: str) -> StageResult:
    return forensic_kernel_stage(params_for(sections, "poison_kernel"), RunLayout(root), kind)


@task(name="forensic-kglm", task_run_name="forensic-kglm-{kind}", **CACHED_TASK)
def forensic_kglm(sections: dict[str, Any], root: str, kind: str, checkpoint_hash: str) -> StageResult:
    return forensic_kglm_stage(params_for(sections, "forensic_kglm"), RunLayout(root), kind)


@task(name="detect-poison", **CACHED_TASK)
def detect(sections: dict[str, Any], root: str, faith: list[dict[str, Any]]) -> StageResult:
    return detection_stage(params_for(sections, "detect_poison"), RunLayout(root), faith)
