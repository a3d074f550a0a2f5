import numpy as np
import pytest

from kernelscope.surrogate.linearization import arctan, fit_linearization, logistic, r2_logit


def _synthetic(fn, params, n=400, noise=0.0):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.02, 0.98, n)
    y = fn(x, *params)
    return x, np.clip(y + noise * rng.normal(size=n), 1e-6, 1 - 1e-6)


def test_recovers_a_logistic_map():
    x, y = _synthetic(logistic, (0.9, 0.05, 0.4, 0.12))
    fit = fit_linearization(x, y, seed=1)
    assert fit.name == "logistic"
    assert fit.params["alpha"] == pytest.approx(0.4, abs=1e-4)
    assert fit.params["beta"] == pytest.approx(0.12, abs=1e-4)
    assert fit.r2_holdout > 0.999


def test_recovers_an_arctan_map():
    x, y = _synthetic(arctan, (-0.9, 0.0, 0.5, 0.05))
    fit = fit_linearization(x, y, seed=2)
    assert fit.name == "arctan"
    assert fit.params["nu"] == pytest.approx(-0.9, abs=1e-3)
    assert fit.r2_holdout > 0.999


def test_linear_data_gives_a_near_perfect_fit_and_noise_lowers_it():
    x, y = _synthetic(lambda v, nu, mu: nu * v + mu, (0.8, 0.1))
    assert fit_linearization(x, y).r2_holdout > 0.999
    xn, yn = _synthetic(lambda v, nu, mu: nu * v + mu, (0.8, 0.1), noise=0.1)
    assert fit_linearization(xn, yn).r2_holdout < 0.9


def test_r2_masks_saturated_probabilities():
    target = np.array([0.2, 0.5, 0.7, 1.0, 0.0])
    pred = np.array([0.2, 0.5, 0.7, 0.3, 0.9])
    assert r2_logit(pred, target) == pytest.approx(1.0)
