"""Scale-out through prefect-dask: kernel row blocks on a dask.distributed cluster give the same
bytes as the sequential stage, whether the flow starts its own LocalCluster or joins an existing one."""

from __future__ import annotations

import shutil

import pytest

from kernelscope.core.fileio import sha256_file
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import params_from_dict
from kernelscope.kernels.stages import kernel_row_ranges, kernel_split_sizes, kernel_stage

pytestmark = pytest.mark.integration
KINDS = ["trntk", "proj_trntk"]


def sequential_kernels(params, run_root, tmp_path) -> dict[str, str]:
    """The same kernels from the plain in-process stage, on a copy of the run's data and model."""
    ref = tmp_path / "sequential"
    for part in ("data", "model"):
        shutil.copytree(run_root / part, ref / part)
    layout = RunLayout(ref)
    for kind in KINDS:
        kernel_stage(params, layout, kind, progress=False)
    return {
        f"{kind}/{split}": sha256_file(layout.kernel_path(kind, split)) for kind in KINDS for split in ("train", "test")
    }


def run_hashes(run_root) -> dict[str, str]:
    layout = RunLayout(run_root)
    return {
        f"{kind}/{split}": sha256_file(layout.kernel_path(kind, split)) for kind in KINDS for split in ("train", "test")
    }


def test_local_cluster_and_existing_cluster_give_the_sequential_bytes(prefect_harness, tmp_path, tiny_params_dict):
    from distributed import Client, LocalCluster, get_task_stream

    from flows.surrogate import attribution

    tiny_params_dict["kernel"].update(kinds=KINDS, chunk_size=32)  # several blocks per split
    tiny_params_dict["scale"] = {"runner": "dask", "dask_workers": 2, "dask_threads_per_worker": 1, "row_tasks": 3}
    params = params_from_dict(tiny_params_dict)

    # 1. The flow starts a LocalCluster with 2 workers for the run.
    result = attribution(params=params, dataset="digits2", outputs=str(tmp_path / "local"), track=False)
    sizes = kernel_split_sizes(RunLayout(tmp_path / "local" / "digits2"))
    ranges = {split: kernel_row_ranges(params, n) for split, n in sizes.items()}
    assert len(ranges["train"]) == 3 and len(ranges["test"]) >= 2  # the kernels really were cut into row tasks
    expected = sequential_kernels(params, tmp_path / "local" / "digits2", tmp_path)
    assert run_hashes(tmp_path / "local" / "digits2") == expected
    row_tasks = len(KINDS) * sum(len(r) for r in ranges.values())
    # data, train, checkpoint; rows; the writer, kGLM and evaluate per kind; compare
    assert result["tasks"] == 3 + row_tasks + 3 * len(KINDS) + 1

    # 2. An existing cluster, named by its scheduler address (as KERNELSCOPE_DASK_ADDRESS or scale.dask_address would).
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        remote = params_from_dict(
            {**tiny_params_dict, "scale": {**tiny_params_dict["scale"], "dask_address": cluster.scheduler_address}}
        )
        with get_task_stream(client) as stream:
            attribution(params=remote, dataset="digits2", outputs=str(tmp_path / "remote"), track=False)
        workers = {task["worker"] for task in stream.data}
    assert len(stream.data) >= row_tasks and len(workers) == 2  # the row tasks really ran on both workers
    assert run_hashes(tmp_path / "remote" / "digits2") == expected
