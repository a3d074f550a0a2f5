import math

import numpy as np
import pytest

from kernelscope.surrogate.metrics import r_miss, tad, tau_k


def test_tau_k_hand_counted_no_ties():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> (5 - 1) / 6
    assert tau_k(np.array([1, 2, 3, 4.0]), np.array([1, 3, 2, 4.0])) == pytest.approx(4 / 6)


def test_tau_k_is_tau_b_with_ties():
    # a = (1,2,3), b = (1,1,2): C = 2, D = 0, 3 pairs, one tie in b -> 2 / sqrt(3 * 2)
    assert tau_k(np.array([1, 2, 3.0]), np.array([1, 1, 2.0])) == pytest.approx(2 / math.sqrt(6))


def test_tau_k_unchanged_by_monotone_maps():
    rng = np.random.default_rng(0)
    p, q = rng.uniform(0.01, 0.99, 50), rng.uniform(0.01, 0.99, 50)
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    assert tau_k(logit(p), logit(q)) == pytest.approx(tau_k(p, q))
    assert tau_k(p, p) == pytest.approx(1.0)
    assert tau_k(p, -p) == pytest.approx(-1.0)


def test_tau_k_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        tau_k(np.zeros(3), np.zeros(4))


def test_tad_in_percentage_points():
    assert tad(0.95, 0.97) == pytest.approx(-2.0)
    assert tad(1.0, 0.99) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="acc_kglm"):
        tad(95.0, 0.97)


def test_r_miss_hand_counted():
    y = np.array([0, 1, 2, 3, 4])
    nn = np.array([0, 2, 2, 0, 4])  # wrong at 1, 3
    kglm = np.array([0, 2, 1, 0, 1])  # wrong at 1, 2, 3, 4
    # union of wrong = {1, 2, 3, 4}; both wrong with the same prediction: 1 (2 = 2) and 3 (0 = 0)
    assert r_miss(y, nn, kglm) == pytest.approx(2 / 4)


def test_r_miss_no_misclassification_is_nan():
    y = np.array([0, 1, 1])
    assert math.isnan(r_miss(y, y.copy(), y.copy()))


def test_r_miss_disjoint_and_different_mistakes_are_zero():
    y = np.array([0, 0, 0])
    assert r_miss(y, np.array([1, 0, 0]), np.array([0, 0, 0])) == 0.0  # only the NN is wrong
    assert r_miss(y, np.array([1, 0, 0]), np.array([2, 0, 0])) == 0.0  # both wrong, differently
    assert r_miss(y, np.array([1, 0, 0]), np.array([1, 0, 0])) == 1.0  # both wrong, the same way
