"""Tasks of the attribution flow. Each takes only the params sections its stage reads."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from kernelscope.core.params import params_from_dict
from kernelscope.core.provenance import run_checkpoint, run_data
from kernelscope.core.layout import RunLayout
from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage
from kernelscope.data.stages import data_stage
from kernelscope.kernels.stages import kernel_job, kernel_split_blocks, kernel_stage
from kernelscope.models.stages import train_stage
from kernelscope.surrogate.stages import seed_run as _seed_run
from tasks.caching import CACHED_TASK
from tasks.fanout import torch_threads


@task(name="prepare-data", **CACHED_TASK)
def prepare_data(sections: dict[str, Any], dataset: str, root: str, source_hash: str | None = None) -> dict[str, Any]:
    """The dataset's train/test Parquet files (source_hash: content of a user's data file, part of the cache key only)."""
    return data_stage(params_from_dict(sections), dataset, RunLayout(root))


@task(name="train-model", **CACHED_TASK)
def train_model(sections: dict[str, Any], root: str, dataset_hash: str, source_hash: str | None = None) -> dict[str, Any]:
    summary = train_stage(params_from_dict(sections), RunLayout(root), progress=False)
    return {**summary, "path": str(RunLayout(root).model_dir / "model.safetensors")}


@task(name="load-checkpoint", **CACHED_TASK)
def load_checkpoint(sections: dict[str, Any], root: str, checkpoint_hash: str, dataset_hash: str) -> dict[str, Any]:
    """Verify the checkpoint (hashes, params, shapes, data) and return its sidecar record."""
    params, layout = params_from_dict(sections), RunLayout(root)
    ckpt = run_checkpoint(params, layout.model_dir, run_data(params, layout))
    if ckpt.checkpoint_hash != checkpoint_hash:
        raise ValueError(f"{RunLayout(root).model_dir}: checkpoint changed during the run")
    return ckpt.meta


@task(name="kernel-rows", task_run_name="kernel-rows-{kind}-{split}-{start}", **CACHED_TASK)
def kernel_rows(sections: dict[str, Any], root: str, kind: str, split: str, start: int, stop: int,
                checkpoint_hash: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kernel rows [start, stop) of one split: (query ids, float32 rows) per block, as the file stores them."""
    params = params_from_dict(sections)
    with torch_threads(params.scale):
        job = kernel_job(params, RunLayout(root), kind)
        return [(ids, block.astype(np.float32)) for ids, block in kernel_split_blocks(params, job, split, rows=(start, stop))]


@task(name="write-kernel", task_run_name="write-kernel-{kind}")
def write_kernel(sections: dict[str, Any], root: str, kind: str,
                 rows: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]]) -> dict[str, Any]:
    """Write the row-block results of every split into the kind's Parquet kernels (atomically, in order)."""
    return kernel_stage(params_from_dict(sections), RunLayout(root), kind, progress=False,
                        blocks=lambda split: (block for part in rows[split] for block in part))


@task(name="train-kglm", task_run_name="train-kglm-{kind}", **CACHED_TASK)
def train_kglm(sections: dict[str, Any], root: str, kind: str, kernel_train: str, checkpoint_hash: str) -> dict[str, Any]:
    return fit_kglm_stage(params_from_dict(sections), RunLayout(root), kind)


@task(name="evaluate", task_run_name="evaluate-{kind}", **CACHED_TASK)
def evaluate(sections: dict[str, Any], root: str, kind: str, kglm_sha256: str, checkpoint_hash: str) -> dict[str, Any]:
    return {**evaluate_stage(params_from_dict(sections), RunLayout(root), kind), "path": str(RunLayout(root).kglm_dir(kind) / "metrics.json")}


@task(name="compare-kernels", **CACHED_TASK)
def compare_kernels(sections: dict[str, Any], root: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Comparison table, bar chart and residual plots across the run's kernels."""
    result = compare_stage(params_from_dict(sections), RunLayout(root), summaries)
    return {**result, "path": str(RunLayout(root).comparison_dir / "comparison.csv")}


@task(name="seed-run", task_run_name="seed-run-{arch}-seed{seed}", **CACHED_TASK)
def seed_run(sections: dict[str, Any], arch: str, seed: int, kind: str, root: str, data_dir: str, dataset_hash: str,
             data_seed: int) -> dict[str, Any]:
    """Train one seeded model and measure its surrogate's faithfulness (one row of the multi-seed table on one split)."""
    params = params_from_dict({**sections, "seed": seed})
    summary = _seed_run(params, RunLayout(root, shared_data=data_dir, data_seed=data_seed), arch, kind)
    return {**summary, "path": summary["points_csv"]}


@task(name="write-report")
def write_report(root: str, table_dir: str | None, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's self-contained HTML report (not cached: it is cheap and reflects whatever the run folder holds)."""
    from kernelscope.surrogate.report import build_report

    return build_report(root, table_dir)
