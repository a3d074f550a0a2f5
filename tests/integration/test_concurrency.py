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

import time

import pytest

from kernelscope.core.layout import RunLayout
from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_tau
from tests.support.faults import (
    DATASET,
    FAULT_OVERRIDES,
    FAULT_STAGES,
    assert_no_torn_files,
    cli,
    digests,
    finish,
    run_cli,
    temp_files,
)

pytestmark = pytest.mark.integration


def test_two_kernel_runs_on_one_folder_at_once_match_a_sequential_run(tiny_run):
    """Two `kernelscope kernel --kind trntk` processes on one run folder, started together and slowed so their
    writes overlap: both exit 0, the kernels are complete and byte-identical to a lone run, and the next stage
    (kGLM fit and evaluation, which check provenance) reads them."""
    from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage

    shared = tiny_run(FAULT_STAGES, **FAULT_OVERRIDES)
    params_file, out = shared.params_file, shared.out
    layout = RunLayout.at(out, DATASET)
    procs = [cli(["kernel", "--kind", "trntk"], params_file, out, delay=0.1) for _ in range(2)]
    overlap = False
    while any(p.poll() is None for p in procs):
        writers = (
            {t.name.split(".")[3] for t in temp_files(layout.kernel_dir("trntk"))}
            if layout.kernel_dir("trntk").is_dir()
            else set()
        )
        overlap |= len(writers) == 2  # both processes had a temporary file open at the same moment
        time.sleep(0.02)
    results = [finish(p) for p in procs]
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert overlap, "the two writers never overlapped; the test did not exercise concurrency"
    assert temp_files(out) == []
    assert_no_torn_files(out)

    sequential = tiny_run(FAULT_STAGES, **FAULT_OVERRIDES)
    ref_params, ref_out = sequential.params_file, sequential.out
    run_cli(["kernel", "--kind", "trntk"], ref_params, ref_out)
    ref_layout = RunLayout.at(ref_out, DATASET)
    splits = ("train", "test")
    assert digests({s: layout.kernel_path("trntk", s) for s in splits}) == digests(
        {s: ref_layout.kernel_path("trntk", s) for s in splits}
    )

    params = shared.params
    fit_kglm_stage(params, layout, "trntk")
    summary = evaluate_stage(params, layout, "trntk").summary
    assert summary["tau_k"] == pytest.approx(written_tau(layout.kglm_dir("trntk")), abs=WRITTEN_TAU_TOLERANCE)
    assert summary["nn_accuracy"] > 0.9
