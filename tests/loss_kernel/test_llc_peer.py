"""kernelscope's LLC against devinterp 1.3.2 (the peer the benchmark runs) on a model whose λ is known."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from llc_devinterp_peer import devinterp_llc  # noqa: E402

from kernelscope.loss_kernel.llc_calibration import estimate, regular_regression  # noqa: E402
from kernelscope.loss_kernel.sgld import SGLDConfig  # noqa: E402


def test_kernelscope_and_devinterp_recover_a_regular_models_llc_alike():
    torch.manual_seed(0)  # devinterp draws from the global stream (it reseeds it per chain)
    known = regular_regression(10, n=256)  # λ = d / 2 = 5
    config = SGLDConfig(chains=4, draws=100, burn_in=200, steps_between=5, batch_size=256, epsilon=3e-3, gamma=0.01)
    ours = estimate(known, config).llc
    peer, per_chain = devinterp_llc(known, config, seed=0)
    assert len(per_chain) == 4
    assert abs(ours / known.true_llc - 1) < 0.1
    assert abs(peer / known.true_llc - 1) < 0.1
    assert abs(ours - peer) < 0.1 * known.true_llc
    # devinterp leaves the model at w*: a second estimate starts from the same weights
    assert estimate(known, config).llc == ours
