"""Closed-form learning coefficients of linear networks against each other and against hand-computed values."""

import itertools

import pytest

from kernelscope.loss_kernel.known_llc import aoyagi_subset, deep_linear_network_llc, reduced_rank_regression_llc


def test_reduced_rank_regression_hand_computed_cases():
    # case 1, M + H + N + r = 12 even: (2·(3+1)·(4+4) − 0 − 16) / 8 = 6
    assert reduced_rank_regression_llc(4, 3, 4, 1) == 6.0
    # case 1, odd (5 + 3 + 5 + 2 = 15): (2·5·10 − 0 − 25 + 1) / 8 = 9.5
    assert reduced_rank_regression_llc(5, 3, 5, 2) == 9.5
    # case 2 (M + H < N + r): (H M − H r + N r) / 2 = (12 − 3 + 8) / 2
    assert reduced_rank_regression_llc(4, 3, 8, 1) == 8.5
    # case 3 (N + H < M + r): (H N − H r + M r) / 2 = (12 − 3 + 8) / 2
    assert reduced_rank_regression_llc(8, 3, 4, 1) == 8.5
    # case 4 (M + N < H + r): M N / 2, the hidden layer too wide to matter
    assert reduced_rank_regression_llc(3, 8, 4, 1) == 6.0


def test_two_layer_deep_linear_network_is_reduced_rank_regression():
    # two independent theorems (Aoyagi & Watanabe 2005; Aoyagi 2024) on every small shape and rank
    for m, h, n in itertools.product(range(1, 8), repeat=3):
        for r in range(min(m, h, n) + 1):
            assert deep_linear_network_llc([m, h, n], r) == pytest.approx(reduced_rank_regression_llc(m, h, n, r))


def test_deep_linear_network_limits():
    # one layer is a regular model: d / 2 with d = H_1 H_2 parameters
    assert deep_linear_network_llc([5, 3], 2) == 7.5
    # a full-rank product of square layers: only the H² parameters of the product are identified
    assert deep_linear_network_llc([3, 3, 3, 3], 3) == 4.5
    # never above half the parameter count
    for widths in itertools.product(range(1, 5), repeat=4):
        for r in range(min(widths) + 1):
            params = sum(a * b for a, b in zip(widths, widths[1:]))
            assert 0 <= deep_linear_network_llc(list(widths), r) <= params / 2 + 1e-12


def test_aoyagi_subset_conditions_and_errors():
    sigma = aoyagi_subset([2, 3, 2, 9])  # the wide layer stays out of Σ
    assert 3 not in sigma
    with pytest.raises(ValueError, match="true rank"):
        deep_linear_network_llc([3, 2, 3], 3)
    with pytest.raises(ValueError, match="true rank"):
        reduced_rank_regression_llc(3, 2, 3, 4)
