"""The train stage: train the registry architecture on the run's data (or import a user's model) and write
the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import model_spec, run_data, training_section
from kernelscope.core.results import StageResult
from kernelscope.models.checkpoint import SIDECAR_NAME, WEIGHTS_NAME, save_checkpoint
from kernelscope.models.train import train_classifier


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """A checkpoint's two files, as save_checkpoint writes them: the weights, then the sidecar naming their hash."""
    return [Path(model_dir) / WEIGHTS_NAME, Path(model_dir) / SIDECAR_NAME]


def train_stage(params: Params, layout: RunLayout, progress: bool = True) -> StageResult:
    """Train the registry architecture on the run's data, or load a user's factory model and weights;
    write the checkpoint.
    """
    ds = run_data(params, layout, check_params=True)
    source = params.source(ds.name)
    spec = model_spec(params, ds)
    if source is not None and source.model.factory:
        from kernelscope.models.train import imported_classifier

        result = imported_classifier(ds, source.model)
    else:
        result = train_classifier(ds, training_section(params, ds.name)[1], params.seed, progress=progress)
    meta = save_checkpoint(
        result.model,
        layout.model_dir,
        spec,
        dataset_name=ds.name,
        metrics={
            "train_accuracy": result.train_accuracy,
            "test_accuracy": result.test_accuracy,
            "final_loss": result.final_loss,
        },
    )
    summary = {"checkpoint_hash": meta["weights_sha256"], "dataset_hash": ds.dataset_hash, **meta["metrics"]}
    return StageResult.of(summary, checkpoint_files(layout.model_dir))
