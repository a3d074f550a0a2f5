"""The kernel stage: stream one kind's train × train and test × train kernels into Parquet, block by block.

The DVC stages (through the CLI) and the Prefect tasks call these same functions, so the two paths cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kernelscope.core.errors import ArtifactError, ParamsError
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import (
    kernel_expect,
    kernel_options,
    kernel_provenance,
    kernel_storage,
    run_data,
    run_model,
)
from kernelscope.core.results import StageResult
from kernelscope.data.datasets import Dataset, read_dataset
from kernelscope.kernels import kernel_spec
from kernelscope.kernels.assembly import kernel_row_blocks, row_ranges
from kernelscope.kernels.registry import kernel_kind
from kernelscope.kernels.store import read_kernel_meta, write_kernel_blocks
from kernelscope.kernels.topk import (
    KernelMatrix,
    TopkRows,
    kernel_artifact,
    read_kernel_matrix,
    write_topk_kernel_blocks,
)
from kernelscope.models.zoo import pick_device


@dataclass
class KernelJob:
    """Everything one kind's kernel assembly needs: the model's recipe and the query sets."""

    kind: str
    spec: Any
    options: dict[str, Any]
    checkpoint_hash: str
    dataset_hash: str
    x_train: torch.Tensor
    train_ids: np.ndarray
    queries: dict[str, tuple[torch.Tensor | None, np.ndarray]]  # split -> (inputs or None for train × train, ids)


def kernel_job(
    params: Params, layout: RunLayout, kind: str, extra_queries: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> KernelJob:
    ds, ckpt = run_model(params, layout)
    device = pick_device(params.device)
    model = ckpt.model.to(device).eval()
    options = kernel_options(params, kind)
    n_params = sum(p.numel() for p in model.parameters())
    if "projection_dim" in kernel_kind(kind).options and params.kernel.projection_dim > n_params:
        raise ParamsError(
            f"params: kernel.projection_dim is {params.kernel.projection_dim}, "
            f"more than the model's {n_params} parameters; "
            "a projection must be smaller than what it projects, "
            f"set it to at most {n_params} (or use the exact kernels)."
        )
    if kernel_storage(params, kind) == "topk" and params.kernel.topk > len(ds.train.ids):
        raise ParamsError(
            f"params: kernel.topk is {params.kernel.topk}, more than the {len(ds.train.ids)} training points of "
            f"{ds.name}; set it to at most {len(ds.train.ids)} (or kernel.storage: dense)."
        )
    spec = kernel_spec(model, kind, memory_budget_mb=params.kernel.memory_budget_mb, **options)
    queries: dict[str, tuple[torch.Tensor | None, np.ndarray]] = {
        "train": (None, ds.train.ids),
        "test": (torch.from_numpy(ds.test.x).to(device), ds.test.ids),
    }
    queries.update({name: (torch.from_numpy(x).to(device), ids) for name, (x, ids) in (extra_queries or {}).items()})
    return KernelJob(
        kind,
        spec,
        options,
        ckpt.checkpoint_hash,
        ds.dataset_hash,
        torch.from_numpy(ds.train.x).to(device),
        ds.train.ids,
        queries,
    )


def kernel_split_blocks(
    params: Params, job: KernelJob, split: str, rows: tuple[int, int] | None = None, progress: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query ids (b,), kernel rows (b, n_train) float64) of one split, block by block (optionally one row range)."""
    x_query, query_ids = job.queries[split]
    for r, block in kernel_row_blocks(
        job.spec,
        job.x_train if x_query is None else x_query,
        None if x_query is None else job.x_train,
        chunk_size=params.kernel.chunk_size,
        memory_budget_mb=params.kernel.memory_budget_mb,
        progress=progress,
        rows=rows,
    ):
        yield query_ids[r], block


def stored_blocks(
    params: Params, job: KernelJob, split: str, rows: tuple[int, int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray | TopkRows]]:
    """``kernel_split_blocks`` as the kernel file stores them: float32 rows, or (kernel.storage: topk) each row's
    top-k entries, which is all a row-block task need hand over; written, either gives the sequential stage's bytes."""
    topk = kernel_storage(params, job.kind) == "topk"
    for ids, block in kernel_split_blocks(params, job, split, rows=rows):
        yield ids, TopkRows.of(block, params.kernel.topk) if topk else block.astype(np.float32)


def kernel_split_sizes(layout: RunLayout) -> dict[str, int]:
    """Query rows of the train and test kernels of a run."""
    ds = read_dataset(layout.data_dir)
    return {"train": len(ds.train.ids), "test": len(ds.test.ids)}


def kernel_row_ranges(params: Params, n_query: int) -> list[tuple[int, int]]:
    """The query-row ranges of a split, one per row-block task (``scale.row_tasks``)."""
    return row_ranges(n_query, params.kernel.chunk_size, params.scale.row_tasks)


BlockSource = Callable[[str], Iterable[tuple[np.ndarray, np.ndarray | TopkRows]]]


def kernel_stage(
    params: Params,
    layout: RunLayout,
    kind: str,
    progress: bool = True,
    extra_queries: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    blocks: BlockSource | None = None,
) -> StageResult:
    """Stream the train × train and test × train kernels of one kind into Parquet, block by block.

    ``extra_queries`` adds more query sets against the same training set: {split name: (x, ids)}.
    ``blocks(split)``, when given, supplies the split's blocks in order (e.g. gathered from row-block
    tasks on a Dask cluster) instead of computing them here; the file is the same either way.
    """
    job = kernel_job(params, layout, kind, extra_queries)
    written = {}
    for split, (_, query_ids) in job.queries.items():
        source = blocks(split) if blocks is not None else kernel_split_blocks(params, job, split, progress=progress)
        provenance = kernel_provenance(params, kind, job.checkpoint_hash, job.dataset_hash, split)
        path = layout.kernel_path(kind, split)
        if kernel_storage(params, kind) == "topk":
            write_topk_kernel_blocks(path, source, len(query_ids), job.train_ids, provenance, k=params.kernel.topk)
        else:
            write_kernel_blocks(path, source, len(query_ids), job.train_ids, provenance)
        written[split] = str(layout.kernel_path(kind, split))
    return kernel_result(kind, job.checkpoint_hash, job.dataset_hash, written)


def kernel_result(kind: str, checkpoint_hash: str, dataset_hash: str, written: dict[str, str]) -> StageResult:
    """What the kernel stage returns for a kind: its files ({split: path}) and the hashes they were computed from."""
    summary = {"kind": kind, "checkpoint_hash": checkpoint_hash, "dataset_hash": dataset_hash, **written}
    return StageResult.of(summary, written.values())


def current_kernel(params: Params, layout: RunLayout, kind: str, checkpoint_hash: str) -> StageResult | None:
    """The kind's train and test kernels, when both files verify against params, the run's data and this checkpoint
    (hashed whole, nothing materialized); None when one is missing, damaged or from another run."""
    ds = run_data(params, layout)
    written = {split: str(layout.kernel_path(kind, split)) for split in ("train", "test")}
    try:
        for split, path in written.items():
            read_kernel_meta(
                path,
                kernel_expect(params, kind, checkpoint_hash, ds, split),
                kernel_artifact(kernel_storage(params, kind)),
            )
    except ArtifactError:
        return None
    return kernel_result(kind, checkpoint_hash, ds.dataset_hash, written)


def read_run_kernel(
    params: Params, layout: RunLayout, ds: Dataset, checkpoint_hash: str, kind: str, split: str, query_ids: np.ndarray
) -> tuple[KernelMatrix, dict[str, Any]]:
    """The run's verified kernel of ``split`` (rows ``query_ids`` in order, columns ds's training points) in the
    storage params name: dense float32, or the CSR matrix of each row's top-k entries."""
    return read_kernel_matrix(
        layout.kernel_path(kind, split),
        kernel_storage(params, kind),
        expect=kernel_expect(params, kind, checkpoint_hash, ds, split),
        query_ids=query_ids,
    )
