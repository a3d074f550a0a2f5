"""Concurrency: two runs of the same stage at once, on the same params and the same output folder.

What makes this safe: every artifact is written to a temporary file whose name carries the host,
the process id and a random part (``kernelscope.core.fileio.atomic_path``), then renamed onto its final
name. Two writers of one kernel never share a temporary file, a reader never sees a half-written
file, and since both compute the same bytes, whichever rename lands last leaves the same complete
file. The stale-temp cleanup at the start of each write only removes temporaries of processes that
are gone, so it never deletes the other live writer's file.

Two concurrent Prefect flow runs sharing one PREFECT_HOME (the project's cache folder) are not
tested here: each process starts its own temporary Prefect server, and two such runs of the tiny
attribution flow took about 90 s on two cores (one alone about 38 s), over this module's budget.
Run by hand they both completed, the second one taking 7 of its 8 tasks from the first one's cache.
"""

from __future__ import annotations

import copy
import threading
import time

import pytest

from fault_helpers import DATASET, assert_no_torn_files, cli, copy_run, digests, finish, prepare_run, run_cli, temp_files
from kernelscope.core.fileio import _HOST, atomic_path
from kernelscope.core.layout import RunLayout


def test_temporary_names_are_unique_per_process_and_per_write(tmp_path):
    """Two writes of one target in flight at once (threads) get distinct temporaries named after this process;
    the target ends as one complete payload, never a mix."""
    import os

    target = tmp_path / "kernel.parquet"
    names, barrier = [], threading.Barrier(2)

    def write(payload: bytes) -> None:
        with atomic_path(target) as tmp:
            names.append(tmp.name)
            barrier.wait(timeout=10)  # both temporaries exist at the same time
            with open(tmp, "wb") as handle:
                for i in range(0, len(payload), 4096):
                    handle.write(payload[i : i + 4096])
                    time.sleep(0.001)

    payloads = [b"a" * 40_000, b"b" * 40_000]
    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(names)) == 2 and all(n.startswith(f".kernel.parquet.{_HOST}-{os.getpid()}.") for n in names)
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.parquet"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    prepare_run(root)
    return root


@pytest.mark.integration
def test_two_kernel_runs_on_one_folder_at_once_match_a_sequential_run(prepared, tmp_path):
    """Two `kernelscope kernel --kind trntk` processes on one run folder, started together and slowed so their
    writes overlap: both exit 0, the kernels are complete and byte-identical to a lone run, and the next stage
    (kGLM fit and evaluation, which check provenance) reads them."""
    from fault_helpers import FAULT_PARAMS
    from kernelscope.core.params import params_from_dict
    from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage

    params_file, out = copy_run(prepared, tmp_path / "shared")
    layout = RunLayout.at(out, DATASET)
    procs = [cli(["kernel", "--kind", "trntk"], params_file, out, delay=0.1) for _ in range(2)]
    overlap = False
    while any(p.poll() is None for p in procs):
        writers = {t.name.split(".")[3] for t in temp_files(layout.kernel_dir("trntk"))} if layout.kernel_dir("trntk").is_dir() else set()
        overlap |= len(writers) == 2  # both processes had a temporary file open at the same moment
        time.sleep(0.02)
    results = [finish(p) for p in procs]
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert overlap, "the two writers never overlapped; the test did not exercise concurrency"
    assert temp_files(out) == []
    assert_no_torn_files(out)

    ref_params, ref_out = copy_run(prepared, tmp_path / "sequential")
    run_cli(["kernel", "--kind", "trntk"], ref_params, ref_out)
    ref_layout = RunLayout.at(ref_out, DATASET)
    splits = ("train", "test")
    assert digests({s: layout.kernel_path("trntk", s) for s in splits}) == digests({s: ref_layout.kernel_path("trntk", s) for s in splits})

    params = params_from_dict(copy.deepcopy(FAULT_PARAMS))
    fit_kglm_stage(params, layout, "trntk")
    summary = evaluate_stage(params, layout, "trntk").summary
    assert -1.0 <= summary["tau_k"] <= 1.0 and summary["nn_accuracy"] > 0.9
