"""The train stage: train the registry architecture on the run's data (or import a user's model) and write
the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import model_spec, run_data, training_section
from kernelscope.core.results import StageResult
from kernelscope.data.datasets import Dataset
from kernelscope.models.checkpoint import SIDECAR_NAME, WEIGHTS_NAME, save_checkpoint
from kernelscope.models.stacked_training import train_on_subsets
from kernelscope.models.train import TrainResult, accuracy, train_classifier
from kernelscope.models.zoo import architecture


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """A checkpoint's two files, as save_checkpoint writes them: the weights, then the sidecar naming their hash."""
    return [Path(model_dir) / WEIGHTS_NAME, Path(model_dir) / SIDECAR_NAME]


def train_stage(params: Params, layout: RunLayout, progress: bool = True) -> StageResult:
    """Train the registry architecture on the run's data, or load a user's factory model and weights;
    write the checkpoint.
    """
    ds = run_data(params, layout, check_params=True)
    source = params.source(ds.name)
    if source is not None and source.model.factory:
        from kernelscope.models.train import imported_classifier

        result = imported_classifier(ds, source.model)
    else:
        result = train_classifier(ds, training_section(params, ds.name)[1], params.seed, progress=progress)
    return _written(result, params, ds, layout)


def _written(result: TrainResult, params: Params, ds: Dataset, layout: RunLayout) -> StageResult:
    """Write one trained model's checkpoint into the run's model folder; the train stage's result."""
    meta = save_checkpoint(
        result.model,
        layout.model_dir,
        model_spec(params, ds),
        dataset_name=ds.name,
        metrics={
            "train_accuracy": result.train_accuracy,
            "test_accuracy": result.test_accuracy,
            "final_loss": result.final_loss,
        },
    )
    summary = {"checkpoint_hash": meta["weights_sha256"], "dataset_hash": ds.dataset_hash, **meta["metrics"]}
    return StageResult.of(summary, checkpoint_files(layout.model_dir))


def train_seeds_stage(params: Params, seeds: list[int], layouts: list[RunLayout]) -> list[StageResult]:
    """The train stage for several seeds of the registry architecture on one dataset (the multi-seed table):
    seed k's checkpoint in layouts[k], params.seed replaced by seeds[k]. The seeds are trained as one stack
    (models.stacked_training: one batched step for all, each model its single training to float32 rounding;
    models with BatchNorm one after another, byte for byte); a user's imported model goes through the train
    stage seed by seed."""
    runs = [params.model_copy(update={"seed": seed}) for seed in seeds]
    datasets = [run_data(run, layout, check_params=True) for run, layout in zip(runs, layouts)]  # each run's check
    ds, section = datasets[0], training_section(params, datasets[0].name)[1]
    if any(d.dataset_hash != ds.dataset_hash for d in datasets):
        raise ValueError(f"{layouts[0].root}: the seeds of one stack must share their data (the table's data folder)")
    source = params.source(ds.name)
    if source is not None and source.model.factory:
        return [train_stage(run, layout, progress=False) for run, layout in zip(runs, layouts)]
    everything = np.tile(np.arange(len(ds.train.y)), (len(seeds), 1))  # (m, N): every model sees every point
    stack = train_on_subsets(ds, section, everything, np.array(seeds))
    results = []
    for k, (run, layout) in enumerate(zip(runs, layouts)):
        model = stack.model(k)
        trained = TrainResult(
            model=model,
            arch=architecture(ds, section),
            train_accuracy=accuracy(model, ds.train.x, ds.train.y),
            test_accuracy=accuracy(model, ds.test.x, ds.test.y),
            final_loss=float(stack.final_losses[k]),
        )
        results.append(_written(trained, run, ds, layout))
    return results
