"""Tasks of the structure flow: each loads the subject (checkpoint and data) and runs one probe.

Their cache keys hold the params sections they read and the checkpoint's hash, so a retrained model
or a changed setting reruns exactly the probes it affects.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from kernelscope.core.results import StageResult
from kernelscope.core.stage_reads import params_for, structure_stage
from tasks.caching import CACHED_TASK


def _run(stage: str, sections: dict[str, Any], subject: str, outputs: str) -> StageResult:
    from kernelscope.structure import stages
    from kernelscope.structure.subjects import load_subject

    params = params_for(sections, structure_stage(subject))
    return getattr(stages, stage)(params, load_subject(params, subject, outputs))


@task(name="layer-spectra", **CACHED_TASK)
def layer_spectra(sections: dict[str, Any], subject: str, outputs: str, checkpoint_hash: str) -> StageResult:
    """Singular values of every adjacent layer pair's Jacobian, per point and stacked; effective ranks."""
    return _run("spectra_stage", sections, subject, outputs)


@task(name="degeneracy", **CACHED_TASK)
def degeneracy(sections: dict[str, Any], subject: str, outputs: str, checkpoint_hash: str) -> StageResult:
    """Activation and gradient Gram spectra per layer; ReLUs firing on the same inputs."""
    return _run("degeneracy_stage", sections, subject, outputs)


@task(name="interaction-basis", **CACHED_TASK)
def interaction_basis(sections: dict[str, Any], subject: str, outputs: str, checkpoint_hash: str) -> StageResult:
    """The interaction basis per layer and ablation curves against PCA."""
    return _run("interaction_stage", sections, subject, outputs)


@task(name="coordinate-check", **CACHED_TASK)
def coordinate_check(sections: dict[str, Any], subject: str, outputs: str, checkpoint_hash: str) -> StageResult:
    """Rank and neuron-basis measures before and after function-preserving reparameterizations."""
    return _run("coordinate_stage", sections, subject, outputs)
