"""The LLC estimator on models whose learning coefficient is known, the ε/γ calibration rule, and the sampler's
health checks."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from kernelscope.loss_kernel.llc_calibration import (
    Estimate,
    calibrate,
    equal_time,
    estimate,
    plot_llc_against_epsilon,
    polynomial_potential,
    regular_regression,
)
from kernelscope.loss_kernel.sampler_health import health_warnings
from kernelscope.loss_kernel.sgld import SGLDConfig, SGLDResult


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (a second one only spins at every barrier, worse on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# 16 chains × 200 draws: the estimator's spread across sampler seeds is then about 2% on these models
FAST = SGLDConfig(chains=16, draws=200, burn_in=200, steps_between=10, batch_size=256, epsilon=3e-3, gamma=1.0)


@pytest.mark.parametrize(
    "known", [regular_regression(3, n=256), polynomial_potential((1, 2), n=256)], ids=["regular-d3", "w2-w4"]
)
def test_llc_recovers_the_known_learning_coefficient(known):
    assert known.true_llc in (1.5, 0.75)  # d / 2; 1/2 + 1/4
    result = estimate(known, FAST)
    assert result.llc == pytest.approx(known.true_llc, rel=0.1)
    assert result.warnings == ()


def test_a_strong_localization_pulls_the_estimate_down():
    known = regular_regression(3, n=256)  # curvature about 1, nβ = 256 / ln 256 = 46: ½ nβ / (nβ + γ) per direction
    strong = estimate(known, replace(FAST, draws=100, gamma=100.0))
    assert strong.llc == pytest.approx(1.5 * 46.2 / (46.2 + 100.0), rel=0.2)


def _row(gamma, llcs, warned=()):
    epsilons = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2][: len(llcs)]
    return [
        Estimate(e, gamma, v, (v,), ("spike",) if i in warned else ()) for i, (e, v) in enumerate(zip(epsilons, llcs))
    ]


def test_calibrate_keeps_the_end_of_the_first_plateau_at_the_smallest_gamma():
    # under-mixed at the smallest ε, a plateau, then discretization bias
    kept = calibrate(_row(1.0, [0.30, 0.40, 0.41, 0.42, 0.60]) + _row(10.0, [0.25, 0.25, 0.25, 0.25, 0.25]))
    assert (kept.epsilon, kept.gamma) == (3e-3, 1.0)
    # a warned estimate ends the plateau; no plateau at γ = 1 hands over to γ = 10
    assert calibrate(_row(1.0, [0.40, 0.41, 0.42], warned=(2,))).epsilon == 3e-4
    kept = calibrate(_row(1.0, [0.1, 0.3, 0.6, 1.2]) + _row(10.0, [0.5, 0.51, 0.9]))
    assert (kept.epsilon, kept.gamma) == (3e-4, 10.0)
    assert calibrate(_row(1.0, [0.1, 0.3, 0.6])) is None


def _result(trace: np.ndarray) -> SGLDResult:
    return SGLDResult(np.zeros((1, 1, 1)), np.zeros(1), trace, 0.0, np.full((1, 1), 0.01), 10.0, 1e-4)


def test_health_flags_a_transient_spike_but_not_heavy_tailed_equilibrium():
    rng = np.random.default_rng(0)
    heavy = (rng.normal(size=(4, 2000)) ** 4) * 1e-3  # w⁴-like fluctuations: max ≫ median everywhere
    assert health_warnings(_result(heavy)) == []
    spiked = heavy.copy()
    spiked[1, 20] = 100 * heavy.max()
    assert any("early loss spike" in note for note in health_warnings(_result(spiked)))


def test_a_diverging_setting_is_a_warned_nan_and_the_sweep_goes_on():
    known = regular_regression(3, n=256)
    diverged = estimate(known, replace(FAST, epsilon=5.0, draws=5, burn_in=50))
    assert np.isnan(diverged.llc) and "diverged" in diverged.warnings[0] and "epsilon" in diverged.warnings[0]
    assert calibrate([*_row(1.0, [0.40, 0.41]), replace(diverged, gamma=1.0)]).epsilon == 3e-4


def test_split_rhat_against_hand_computation():
    from kernelscope.loss_kernel.sampler_health import split_rhat

    x = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]])  # halves [1,2] [2,3] [3,4] [4,5]
    # half length 2: within = mean of the halves' variances (0.5), between = 2 · var([1.5, 2.5, 3.5, 4.5]) = 2 · 5/3
    within, between = 0.5, 2 * (5 / 3)
    assert split_rhat(x) == pytest.approx(np.sqrt((0.5 * within + between / 2) / within))
    rng = np.random.default_rng(0)
    assert split_rhat(rng.normal(size=(4, 400))) == pytest.approx(1.0, abs=0.02)


def test_health_flags_drifting_chains_and_draws_that_leave_the_low_loss_region():
    rng = np.random.default_rng(0)
    mixed = 0.01 + 1e-3 * rng.normal(size=(4, 200))
    trace = np.full((4, 100), 0.01)
    assert health_warnings(SGLDResult(np.zeros((1, 1, 1)), np.zeros(1), trace, 0.005, mixed, 10.0, 1e-4)) == []
    drifting = mixed + np.linspace(0, 0.01, 200)  # every chain still climbing
    notes = health_warnings(SGLDResult(np.zeros((1, 1, 1)), np.zeros(1), trace, 0.005, drifting, 10.0, 1e-4))
    assert len(notes) == 1 and "R-hat" in notes[0]
    apart = mixed + np.array([[0.0], [0.0], [0.0], [0.02]])  # one chain in another basin
    assert any(
        "R-hat" in n
        for n in health_warnings(SGLDResult(np.zeros((1, 1, 1)), np.zeros(1), trace, 0.005, apart, 10.0, 1e-4))
    )
    wandered = mixed + 3.0  # 3 nats above L_n(w*): the model no longer fits
    notes = health_warnings(SGLDResult(np.zeros((1, 1, 1)), np.zeros(1), trace, 0.005, wandered, 10.0, 1e-4))
    assert len(notes) == 1 and "low-loss region" in notes[0]


def test_equal_time_keeps_the_langevin_time_of_the_base():
    base = SGLDConfig(epsilon=3e-4, burn_in=8000, steps_between=80, draws=200)
    smaller = equal_time(base, 1e-4)
    assert (smaller.epsilon, smaller.burn_in, smaller.steps_between, smaller.draws) == (1e-4, 24000, 240, 200)
    larger = equal_time(base, 3e-2)  # spacing never below one step
    assert (larger.burn_in, larger.steps_between) == (80, 1)


def test_llc_plot_draws_the_true_value_only_when_one_is_known(tmp_path):
    known = polynomial_potential((1, 2), n=8)
    estimates = [Estimate(e, g, 0.7 + e, (), ()) for g in (0.01, 1.0) for e in (1e-3, 1e-2)]
    with_truth = plot_llc_against_epsilon(tmp_path / "known.png", known, estimates)
    network = plot_llc_against_epsilon(tmp_path / "network.png", replace(known, true_llc=float("nan")), estimates)
    assert with_truth.read_bytes()[:8] == network.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert with_truth.read_bytes() != network.read_bytes()  # the dashed line and its legend entry
