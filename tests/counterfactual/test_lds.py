"""LDS and its bootstrap: a synthetic linear datamodel, scipy's Spearman and hand-computed values."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from kernelscope.counterfactual.lds import bootstrap_mean, datamodel_predictions, lds_per_query, spearman_columns
from kernelscope.counterfactual.subsets import draw_subsets


def linear_world(seed: int = 0, n_train: int = 60, n_test: int = 12, m: int = 80, noise: float = 0.0):
    """Outputs that are exactly linear in the subset: f_k(x) = Σ_{j∈S_k} τ*(x, j) (+ noise)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n_test, n_train))
    masks = draw_subsets(n_train, m, 0.5, seed)
    outputs = masks.astype(float) @ truth.T + noise * rng.normal(size=(m, n_test))
    return truth, masks, outputs


def test_true_attribution_scores_one_and_noise_scores_zero():
    truth, masks, outputs = linear_world()
    assert np.allclose(lds_per_query(truth, masks, outputs), 1.0)
    noisy = lds_per_query(np.random.default_rng(9).normal(size=truth.shape), masks, outputs)
    assert abs(noisy.mean()) < 0.1  # 12 test points × 80 subsets: the mean of null ρ is within ±0.1
    # a positive rescaling and a shift per query leave the ranks alone; a sign flip reverses them
    assert np.allclose(lds_per_query(3 * truth + 5, masks, outputs), 1.0)
    assert np.allclose(lds_per_query(-truth, masks, outputs), -1.0)


def test_lds_degrades_with_noise_in_the_outputs():
    truth, masks, clean = linear_world()
    _, _, noisy = linear_world(noise=5.0)
    assert lds_per_query(truth, masks, noisy).mean() < lds_per_query(truth, masks, clean).mean() - 0.2


def test_spearman_matches_scipy_with_ties_and_a_constant_column():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(15, 5)).astype(float)  # ties
    b = rng.normal(size=(15, 5))
    b[:, 4] = 2.0  # constant: undefined
    got = spearman_columns(a, b)
    for col in range(4):
        assert got[col] == pytest.approx(spearmanr(a[:, col], b[:, col]).statistic, abs=1e-12)
    assert np.isnan(got[4])


def test_hand_computed_lds():
    # 2 training points, 3 subsets {0}, {1}, {0, 1}; one test point with τ = (1, 2): predictions (1, 2, 3)
    masks = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    assert datamodel_predictions(np.array([[1.0, 2.0]]), masks)[:, 0].tolist() == [1.0, 2.0, 3.0]
    # outputs ranked (2, 1, 3) against (1, 2, 3): ρ = 1 − 6 Σd² / (n(n² − 1)) = 1 − 6·2/24 = 0.5
    assert lds_per_query(np.array([[1.0, 2.0]]), masks, np.array([[5.0], [4.0], [9.0]]))[0] == pytest.approx(0.5)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(2).normal(0.3, 0.1, size=200)
    a, b = bootstrap_mean(values, seed=4), bootstrap_mean(values, seed=4)
    assert a == b and a.low < a.mean < a.high and a.n == 200
    assert a.mean == pytest.approx(values.mean())
    # the 95% interval of a mean is about ±1.96 σ/√n
    assert (a.high - a.low) == pytest.approx(2 * 1.96 * values.std() / np.sqrt(200), rel=0.2)
    with_nan = bootstrap_mean(np.append(values, np.nan), seed=4)
    assert with_nan.n == 200 and with_nan.mean == pytest.approx(a.mean)
