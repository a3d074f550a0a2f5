"""Crash safety: a stage SIGKILLed part way through leaves no torn artifact, and the next run ends with the same bytes.

Recovery is by *starting clean*, not by resuming: every artifact is written to a temporary file
beside its final name (``.<name>.<host>-<pid>.<random>.tmp``, ``kernelscope.core.fileio.atomic_path``)
and renamed only when complete, so a kill leaves either the previous complete file or nothing under
the final name. The next write of the same target deletes temporary files of writers on this host
whose process is gone, and recomputes the artifact from the start; files that were finished before
the kill (the train kernel, the probe losses) are simply rewritten with identical bytes. (Resuming
from completed row blocks would save at most one split's assembly on a restart; it is not done.)

The kills are timed with a test hook, KERNELSCOPE_TEST_BLOCK_DELAY, which makes the kernel writer
sleep after each row group so the kill lands while a temporary file is half written.
"""

from __future__ import annotations

import os

import pytest

from kernelscope.core.fileio import sha256_file
from kernelscope.core.layout import RunLayout
from tests.support.faults import (
    DATASET,
    FAULT_OVERRIDES,
    FAULT_STAGES,
    assert_no_torn_files,
    cli,
    digests,
    finish,
    run_cli,
    sigkill,
    temp_files,
    wait_for_temp,
)

pytestmark = pytest.mark.integration


def test_kernel_stage_killed_mid_file_recovers_to_the_uninterrupted_bytes(tiny_run):
    """SIGKILL `kernelscope kernel --kind trntk` while the test × train kernel is half written (the train × train one
    is finished): no torn file under a final name; the rerun starts clean, removes the leftover temporary file and
    writes the same bytes as an uninterrupted run in another folder."""
    killed, ref = tiny_run(FAULT_STAGES, **FAULT_OVERRIDES), tiny_run(FAULT_STAGES, **FAULT_OVERRIDES)
    killed_params, killed_out, ref_params, ref_out = killed.params_file, killed.out, ref.params_file, ref.out
    killed_layout, ref_layout = RunLayout.at(killed_out, DATASET), RunLayout.at(ref_out, DATASET)
    kernel_dir = killed_layout.kernel_dir("trntk")

    reference = cli(["kernel", "--kind", "trntk"], ref_params, ref_out)  # uninterrupted, alongside
    victim = cli(["kernel", "--kind", "trntk"], killed_params, killed_out, delay=0.15)
    half_written = wait_for_temp(victim, kernel_dir, ".test.parquet.*.tmp")
    sigkill(victim)
    assert finish(reference).returncode == 0

    assert half_written[0].exists(), "the killed writer's temporary file should still be there"
    assert not killed_layout.kernel_path("trntk", "test").exists()  # never renamed: nothing under the final name
    checked = assert_no_torn_files(killed_out)
    assert killed_layout.kernel_path("trntk", "train") in checked  # finished before the kill: complete
    assert sha256_file(killed_layout.kernel_path("trntk", "train")) == sha256_file(
        ref_layout.kernel_path("trntk", "train")
    )

    run_cli(["kernel", "--kind", "trntk"], killed_params, killed_out)
    assert temp_files(killed_out) == []  # the leftover was cleaned, nothing new left behind
    splits = ("train", "test")
    assert digests({s: killed_layout.kernel_path("trntk", s) for s in splits}) == digests(
        {s: ref_layout.kernel_path("trntk", s) for s in splits}
    )
    assert_no_torn_files(killed_out)


def test_loss_kernel_stage_killed_mid_file_recovers_to_the_uninterrupted_bytes(tiny_run):
    """SIGKILL `kernelscope loss-kernel` after SGLD, while the first loss kernel (loss_cov, train) is half written:
    the probe losses written before are complete, no kernel is torn, and the rerun (SGLD again from the seed) ends
    with the bytes of an uninterrupted run."""
    killed, ref = tiny_run(FAULT_STAGES, **FAULT_OVERRIDES), tiny_run(FAULT_STAGES, **FAULT_OVERRIDES)
    killed_params, killed_out, ref_params, ref_out = killed.params_file, killed.out, ref.params_file, ref.out
    killed_layout, ref_layout = RunLayout.at(killed_out, DATASET), RunLayout.at(ref_out, DATASET)
    command = ["loss-kernel", "--no-track"]

    reference = cli(command, ref_params, ref_out)
    victim = cli(command, killed_params, killed_out, delay=2.0)
    wait_for_temp(victim, killed_layout.kernel_dir("loss_cov"), ".train.parquet.*.tmp")
    sigkill(victim)
    assert finish(reference, timeout=180).returncode == 0

    assert temp_files(killed_out), "the kill should land while a temporary file is open"
    for kind in ("loss_cov", "loss_corr"):
        for split in ("train", "test"):
            assert not killed_layout.kernel_path(kind, split).exists()
    checked = assert_no_torn_files(killed_out)
    probe_losses = killed_layout.root / "loss_kernel" / "probe_losses.parquet"
    assert probe_losses in checked  # written (atomically) before the kill
    assert not (killed_layout.root / "loss_kernel" / "summary.json").exists()

    run_cli(command, killed_params, killed_out, timeout=180)
    assert temp_files(killed_out) == []

    def artifacts(layout: RunLayout) -> dict[str, os.PathLike]:
        files = {
            f"{kind}/{split}": layout.kernel_path(kind, split)
            for kind in ("loss_cov", "loss_corr")
            for split in ("train", "test")
        }
        return {
            **files,
            "probe_losses": layout.root / "loss_kernel" / "probe_losses.parquet",
            "metrics": layout.root / "loss_kernel_metrics.json",
        }

    assert digests(artifacts(killed_layout)) == digests(artifacts(ref_layout))
    assert_no_torn_files(killed_out)
