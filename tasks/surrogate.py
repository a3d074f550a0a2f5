"""Tasks of the NTK-surrogate flows (attribution, explain, the multi-seed table).
Each takes only the params sections its stage reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.sections import kernel_sections
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import run_checkpoint, run_data
from kernelscope.core.results import StageResult
from kernelscope.core.stage_reads import params_for
from kernelscope.data.stages import data_stage
from kernelscope.kernels.stages import (
    current_kernel,
    kernel_job,
    kernel_row_ranges,
    kernel_split_sizes,
    kernel_stage,
    stored_blocks,
)
from kernelscope.kernels.topk import TopkRows
from kernelscope.models.stages import checkpoint_files, train_seeds_stage, train_stage
from kernelscope.surrogate.explain import Query, explain
from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage, with_arch
from kernelscope.surrogate.stages import seed_run as _seed_run
from tasks.caching import CACHED_TASK, cached_except
from tasks.fanout import Fanout, torch_threads


@task(name="prepare-data", **CACHED_TASK)
def prepare_data(sections: dict[str, Any], dataset: str, root: str, source_hash: str | None = None) -> StageResult:
    """The dataset's train/test Parquet files (source_hash: content of a user's data file,
    part of the cache key only)."""
    return data_stage(params_for(sections, "data"), dataset, RunLayout(root))


@task(name="train-model", **CACHED_TASK)
def train_model(sections: dict[str, Any], root: str, dataset_hash: str, source_hash: str | None = None) -> StageResult:
    return train_stage(params_for(sections, "train"), RunLayout(root), progress=False)


@task(name="load-checkpoint", **CACHED_TASK)
def load_checkpoint(sections: dict[str, Any], root: str, checkpoint_hash: str, dataset_hash: str) -> StageResult:
    """Verify the checkpoint (hashes, params, shapes, data) and return its sidecar record (outputs: the two files it
    describes, so a hit whose checkpoint has changed since is verified again)."""
    params, layout = params_for(sections, "load_checkpoint"), RunLayout(root)
    ckpt = run_checkpoint(params, layout.model_dir, run_data(params, layout))
    if ckpt.checkpoint_hash != checkpoint_hash:
        raise ValueError(f"{RunLayout(root).model_dir}: checkpoint changed during the run")
    return StageResult.of(ckpt.meta, checkpoint_files(layout.model_dir))


# Row blocks are no Prefect results: persisted, every block would be a second copy of its kernel under .prefect/ (and
# a key over them would hash every block again). They stay in memory, or on the Dask cluster, until write-kernel
# streams them into the kind's files; the kernel is cached there, per kind (flows.surrogate.assemble_kernels).
@task(
    name="kernel-rows", task_run_name="kernel-rows-{kind}-{split}-{start}", persist_result=False, cache_policy=NO_CACHE
)
def kernel_rows(
    sections: dict[str, Any], root: str, kind: str, split: str, start: int, stop: int, checkpoint_hash: str
) -> list[tuple[np.ndarray, np.ndarray | TopkRows]]:
    """Kernel rows [start, stop) of one split: (query ids, rows) per block as the file stores them (float32 rows, or
    their top-k entries with kernel.storage: topk)."""
    params = params_for(sections, "kernel_rows")
    with torch_threads(params.scale):
        job = kernel_job(params, RunLayout(root), kind)
        return list(stored_blocks(params, job, split, rows=(start, stop)))


@task(name="write-kernel", task_run_name="write-kernel-{kind}", **cached_except("rows"))
def write_kernel(
    sections: dict[str, Any],
    root: str,
    kind: str,
    checkpoint_hash: str,
    rows: dict[str, list[list[tuple[np.ndarray, np.ndarray | TopkRows]]]] | None,
) -> StageResult:
    """Write the row-block results of every split into the kind's Parquet kernels (atomically, in order).

    ``rows`` None: the flow found the kind's files verified against params and this checkpoint and computed no rows.
    That call is a cache hit; with the cache cleared it takes the files as they are (computing them here only if
    they changed in between).
    """
    params, layout = params_for(sections, "kernel"), RunLayout(root)
    if rows is None:
        current = current_kernel(params, layout, kind, checkpoint_hash)
        return current if current is not None else kernel_stage(params, layout, kind, progress=False)

    def blocks(split: str) -> Iterator[tuple[np.ndarray, np.ndarray | TopkRows]]:
        return (block for part in rows[split] for block in part)

    return kernel_stage(params, layout, kind, progress=False, blocks=blocks)


@task(name="train-kglm", task_run_name="train-kglm-{kind}", **CACHED_TASK)
def train_kglm(sections: dict[str, Any], root: str, kind: str, kernel_train: str, checkpoint_hash: str) -> StageResult:
    return fit_kglm_stage(params_for(sections, "train_kglm"), RunLayout(root), kind)


@task(name="evaluate", task_run_name="evaluate-{kind}", **CACHED_TASK)
def evaluate(sections: dict[str, Any], root: str, kind: str, kglm_sha256: str, checkpoint_hash: str) -> StageResult:
    return evaluate_stage(params_for(sections, "evaluate"), RunLayout(root), kind)


@task(name="compare-kernels", **CACHED_TASK)
def compare_kernels(sections: dict[str, Any], root: str, summaries: list[dict[str, Any]]) -> StageResult:
    """Comparison table, bar chart and residual plots across the run's kernels."""
    return compare_stage(params_for(sections, "compare_kernels"), RunLayout(root), summaries)


@task(name="train-seed-models", task_run_name="train-seed-models-{arch}", **CACHED_TASK)
def train_seed_models(
    sections: dict[str, Any],
    arch: str,
    seeds: list[int],
    roots: list[str],
    data_dir: str,
    dataset_hash: str,
    data_seed: int,
) -> StageResult:
    """Train the models of a multi-seed table's row, one per seed, each into its root (stacked where that gives each
    model its single training's bytes). Summary: {"trained": [each seed's train summary]}."""
    params = with_arch(params_for(sections, "seed_models"), arch)
    layouts = [RunLayout(root, shared_data=data_dir, data_seed=data_seed) for root in roots]
    results = train_seeds_stage(params, seeds, layouts)
    return StageResult.of({"trained": [r.summary for r in results]}, [], *results)


@task(name="seed-run", task_run_name="seed-run-{arch}-seed{seed}", **CACHED_TASK)
def seed_run(
    sections: dict[str, Any],
    arch: str,
    seed: int,
    kind: str,
    root: str,
    data_dir: str,
    data_seed: int,
    trained: dict[str, Any],
) -> StageResult:
    """Measure the faithfulness of one seeded model's surrogate (one row of the multi-seed table on one split);
    ``trained``: its train summary (its checkpoint hash keys the cache)."""
    params = params_for({**sections, "seed": seed}, "seed_run")
    return _seed_run(params, RunLayout(root, shared_data=data_dir, data_seed=data_seed), arch, kind, trained)


@task(name="write-report")
def write_report(root: str, table_dir: str | None, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's self-contained HTML report (not cached: it is cheap and reflects whatever the run folder holds)."""
    from kernelscope.surrogate.report import build_report

    return build_report(root, table_dir)


@task(name="explain-input")
def explain_input(params: Params, root: str, kinds: list[str], query: Query, top_k: int) -> dict[str, Any]:
    return explain(params, RunLayout(root), kinds, query, top_k)


def assemble_kernels(
    fan: Fanout, params: Params, root: str, kinds: tuple[str, ...], checkpoint_hash: str, dataset: str
) -> dict[str, StageResult]:
    """Every kind's kernels: row-block tasks for the kinds to compute, all in flight together, then one writer per kind.

    The cache sits at the writer, not at the row blocks (tasks.surrogate.kernel_rows: they are never persisted).
    A kind whose files already verify against params and this checkpoint gets no row tasks: its writer is called
    without rows, a cache hit whose outputs the ledger checks byte for byte. Any other kind's rows are computed and
    written with refresh_cache, since a hit there would keep the files that failed the check.
    """
    layout = RunLayout(root)
    sizes = kernel_split_sizes(layout)
    todo = [kind for kind in kinds if current_kernel(params, layout, kind, checkpoint_hash) is None]
    pending = {
        kind: {
            split: [
                fan.submit(
                    kernel_rows,
                    sections=kernel_sections(params, kind, dataset),
                    root=root,
                    kind=kind,
                    split=split,
                    start=start,
                    stop=stop,
                    checkpoint_hash=checkpoint_hash,
                )
                for start, stop in kernel_row_ranges(params, n)
            ]
            for split, n in sizes.items()
        }
        for kind in todo
    }
    written = {}
    for kind in kinds:
        rows = None
        if kind in pending:  # {split: [blocks of each row task]}, in submission order
            rows = {split: [fan.result(p) for p in parts] for split, parts in pending[kind].items()}
        writer = write_kernel if rows is None else write_kernel.with_options(refresh_cache=True)
        written[kind] = fan.run(
            writer,
            sections=kernel_sections(params, kind, dataset),
            root=root,
            kind=kind,
            checkpoint_hash=checkpoint_hash,
            rows=rows,
        )
    return written
