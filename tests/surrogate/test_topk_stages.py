"""kernel.storage: topk through the kernel and kGLM stages, and the kGLM streamed from disk, on a tiny run."""

import numpy as np
import pytest

from kernelscope.core.errors import ArtifactError
from kernelscope.kernels.stages import kernel_stage
from kernelscope.kernels.store import read_kernel
from kernelscope.kernels.topk import TopkRows, read_topk_kernel, top_k_rows
from kernelscope.surrogate import stages as surrogate_stages
from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage


def test_topk_kernels_hold_the_dense_kernels_largest_entries_and_the_kglm_reads_them(tiny_run):
    run = tiny_run(stages=("data", "train", "kernel"))  # dense trntk kernels
    dense, _ = read_kernel(run.layout.kernel_path("trntk", "test"))
    params = run.params_with(kernel={"storage": "topk", "topk": 12})
    kernel_stage(params, run.layout, "trntk", progress=False)
    sparse, norms, meta = read_topk_kernel(run.layout.kernel_path("trntk", "test"))
    assert meta["storage"] == "topk" and meta["topk"] == 12 and sparse.shape == dense.shape
    index, values, want_norms = top_k_rows(dense, 12)
    for i in range(len(dense)):  # the same entries as the dense file's own top 12
        row = sparse.getrow(i)
        assert sorted(row.indices.tolist()) == sorted(index[i].tolist())
        np.testing.assert_array_equal(np.sort(row.data), np.sort(values[i]))
    np.testing.assert_allclose(norms, want_norms, rtol=1e-6)

    fit_kglm_stage(params, run.layout, "trntk")
    summary = evaluate_stage(params, run.layout, "trntk").summary
    assert summary["kglm_accuracy"] > 0.8 and np.isfinite(summary["tau_k"])
    with pytest.raises(ArtifactError, match="kernel.storage: dense"):  # a dense-only step names the fix
        read_kernel(run.layout.kernel_path("trntk", "test"))


def test_a_dense_kernel_too_large_for_memory_is_fit_from_row_blocks(tiny_run, monkeypatch):
    run = tiny_run(stages=("data", "train", "kernel"))
    params = run.params_with(kglm={"stream_epochs": 15})
    whole = fit_kglm_stage(params, run.layout, "trntk")
    in_memory = evaluate_stage(params, run.layout, "trntk").summary
    monkeypatch.setattr(surrogate_stages, "streams", lambda params, kind, n: True)
    streamed = fit_kglm_stage(params, run.layout, "trntk")
    assert streamed.summary["kglm_sha256"] != whole.summary["kglm_sha256"]  # another fit: partial_fit epochs
    summary = evaluate_stage(params, run.layout, "trntk").summary
    assert summary["kglm_accuracy"] >= in_memory["kglm_accuracy"] - 0.05 and summary["tau_k"] > 0.5


def test_row_range_tasks_handing_over_top_k_entries_give_the_sequential_files(tiny_run):
    """What the Dask flow does with kernel.storage: topk: each row-range task reduces its rows to their top-k entries
    (stored_blocks), the writer gathers them in order; the files are the sequential stage's bytes."""
    from kernelscope.kernels.stages import kernel_job, kernel_row_ranges, stored_blocks

    run = tiny_run(stages=("data", "train"))
    params = run.params_with(kernel={"storage": "topk", "topk": 7, "chunk_size": 32}, scale={"row_tasks": 3})
    kernel_stage(params, run.layout, "trntk", progress=False)
    sequential = {split: run.layout.kernel_path("trntk", split).read_bytes() for split in ("train", "test")}
    job = kernel_job(params, run.layout, "trntk")
    parts = {
        split: [list(stored_blocks(params, job, split, rows=r)) for r in kernel_row_ranges(params, len(ids))]
        for split, (_, ids) in job.queries.items()
    }
    assert len(parts["train"]) == 3 and all(isinstance(b, TopkRows) for _, b in parts["train"][0])
    kernel_stage(params, run.layout, "trntk", progress=False, blocks=lambda s: (b for part in parts[s] for b in part))
    assert {split: run.layout.kernel_path("trntk", split).read_bytes() for split in sequential} == sequential
