"""Which stage writes each kind of artifact, and the errors that name the fix when one is missing, of the wrong
kind or modified (kernelscope.core.artifacts)."""

from __future__ import annotations

from pathlib import Path

from kernelscope.core.errors import ArtifactError

# What writes each kind of artifact: the fix named when one is missing, corrupt or from another run.
WRITERS = {
    "dataset-split": ("the data stage", "kernelscope data"),
    "kernel": ("the kernel stage", "kernelscope kernel"),
    "kernel-topk": ("the kernel stage", "kernelscope kernel"),
    "attributions": ("the kglm stage", "kernelscope kglm"),
    "attributions-topk": ("the kglm stage", "kernelscope kglm"),
    "kglm": ("the kglm stage", "kernelscope kglm"),
    "checkpoint-weights": ("the train stage", "kernelscope train"),
    "checkpoint-sidecar": ("the train stage", "kernelscope train"),
    "probe-losses": ("the loss-kernel stage", "kernelscope loss-kernel"),
    "loss-kernel-summary": ("the loss-kernel stage", "kernelscope loss-kernel"),
    "jacobian-spectra": ("the structure stage", "kernelscope structure"),
    "metrics": ("the kglm stage", "kernelscope kglm"),
    "explanation": ("the explain step", "kernelscope explain"),
    "retrained-outputs": ("the counterfactual stage", "kernelscope counterfactual"),
    "attribution-scores": ("the counterfactual stage", "kernelscope counterfactual"),
    "brittleness-stack": ("the counterfactual stage", "kernelscope counterfactual"),
    "table": ("the stage that writes the table", "kernelscope kglm, or the faithfulness-table flow"),
    "main-job-summary": ("the main job", "make run"),
}


# An artifact found where a step expected another that it cannot stand in for, and what to do instead.
NOT_READABLE_AS = {
    ("kernel", "kernel-topk"): "a top-k sparse kernel (kernel.storage: topk), and this reader takes dense kernels "
    "only; read it with kernelscope.kernels.topk.read_kernel_matrix (every stage does), or set kernel.storage: dense "
    "and rerun the kernel stage (kernelscope kernel)",
}


def fix_hint(artifact: str) -> str:
    stage, command = WRITERS.get(artifact, ("the stage that writes it", "see dvc.yaml"))
    return f"rerun {stage} ({command})"


def missing_error(path: Path, artifact: str) -> ArtifactError:
    stage, command = WRITERS.get(artifact, ("the stage that writes it", "see dvc.yaml"))
    return ArtifactError(f"{path}: {artifact} file not found; run {stage} first ({command}).")


def mismatch_error(path: Path, artifact: str) -> ArtifactError:
    return ArtifactError(
        f"{path}: content does not match its recorded content hash (its values or metadata were modified or "
        f"corrupted); {fix_hint(artifact)}."
    )
