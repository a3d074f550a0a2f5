"""Invertible maps from kGLM probability to NN probability (the NTK-surrogate paper's App. L).

Φ1(x) = ν x + μ;  Φ2(x) = ν σ((x − α)/β) + μ;  Φ3(x) = (ν/π) arctan(−(x − α)/(2β)) + 1/2 + μ.
Each is fit with scipy on one half of the test set by least squares in logit space (the space
where R² is reported; fitting in probability space lets the many near-1 probabilities of a
confident network dominate and collapse the map); the map with the best R² on that half is
chosen, and its R² is reported on the other half, masking probabilities within 1e-7 of 0 or 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, logit

EPS = 1e-7


def linear(x, nu, mu):
    return nu * x + mu


def logistic(x, nu, mu, alpha, beta):
    return nu * expit((x - alpha) / beta) + mu


def arctan(x, nu, mu, alpha, beta):
    return nu / np.pi * np.arctan(-(x - alpha) / (2 * beta)) + 0.5 + mu


MAPS = {
    "linear": (linear, [1.0, 0.0]),
    "logistic": (logistic, [1.0, 0.0, 0.5, 0.1]),
    "arctan": (arctan, [-1.0, 0.0, 0.5, 0.1]),
}


@dataclass(frozen=True)
class Linearization:
    name: str
    params: dict[str, float]
    r2_fit: dict[str, float]
    r2_holdout: float
    n_fit: int
    n_holdout: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        fn, _ = MAPS[self.name]
        return fn(np.asarray(x, dtype=np.float64), *self.params.values())


def r2_logit(pred: np.ndarray, target: np.ndarray) -> float:
    """R² of logit(pred) against logit(target), masking values within EPS of 0 or 1."""
    keep = (target > EPS) & (target < 1 - EPS) & (pred > EPS) & (pred < 1 - EPS)
    if keep.sum() < 3:
        return float("nan")
    y, p = logit(target[keep]), logit(pred[keep])
    ss_res = float(((y - p) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _logit_residuals(fn, x: np.ndarray, y: np.ndarray):
    target = logit(y)

    def residuals(theta: np.ndarray) -> np.ndarray:
        return logit(np.clip(fn(x, *theta), EPS, 1 - EPS)) - target

    return residuals


def fit_linearization(p_kglm: np.ndarray, p_nn: np.ndarray, seed: int = 0) -> Linearization:
    """Fit the three maps on a seeded half of the points, choose by fit R², score on the other half."""
    p_kglm, p_nn = np.asarray(p_kglm, dtype=np.float64), np.asarray(p_nn, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(p_kglm))
    fit_idx, hold_idx = order[: len(order) // 2], order[len(order) // 2 :]
    # Only points where both probabilities are informative: within EPS of 0 or 1 a probability
    # has lost its rank information (a confident kGLM's logits of several hundred give exactly 1.0).
    unsaturated = (p_nn > EPS) & (p_nn < 1 - EPS) & (p_kglm > EPS) & (p_kglm < 1 - EPS)
    usable = fit_idx[unsaturated[fit_idx]]
    if len(usable) < 5:
        raise ValueError(
            f"no linearization map could be fit: only {len(usable)} points of the fit half have both "
            "probabilities strictly between 0 and 1 (the kGLM or the NN is saturated)"
        )
    x, y = p_kglm[usable], p_nn[usable]
    best, best_r2, fits = None, -np.inf, {}
    for name, (fn, start) in MAPS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            solution = least_squares(
                _logit_residuals(fn, x, y), np.asarray(start, dtype=np.float64), method="trf", max_nfev=5000
            )
        popt = solution.x
        r2 = r2_logit(np.clip(fn(p_kglm[fit_idx], *popt), 0, 1), p_nn[fit_idx])
        fits[name] = r2
        if np.isfinite(r2) and r2 > best_r2:
            names = ("nu", "mu") if name == "linear" else ("nu", "mu", "alpha", "beta")
            best, best_r2 = (name, dict(zip(names, map(float, popt)))), r2
    if best is None:
        raise ValueError("no linearization map could be fit (too few points strictly between 0 and 1)")
    name, params = best
    fn, _ = MAPS[name]
    holdout = r2_logit(np.clip(fn(p_kglm[hold_idx], *params.values()), 0, 1), p_nn[hold_idx])
    return Linearization(name, params, fits, holdout, len(usable), int(unsaturated[hold_idx].sum()))


def linearize(points: dict[str, np.ndarray], plot_path: Path, title: str, tau: float) -> dict[str, Any]:
    """Fit kGLM → NN probability maps (App. L) and draw the parity plot; n/a when too few points are unsaturated."""
    from kernelscope.surrogate.plots import linearization_parity  # matplotlib only when drawing

    p_kglm, p_nn = expit(points["kglm_logit"]), expit(points["nn_logit"])
    try:
        fit = fit_linearization(p_kglm, p_nn)
    except ValueError as error:
        return {"linearization": "n/a", "r2_linearization": float("nan"), "linearization_note": str(error)}
    linearization_parity(
        plot_path,
        fit.apply(p_kglm),
        p_nn,
        f"{title}: {fit.name} map, R² = {fit.r2_holdout:.3f} ({fit.n_holdout} unsaturated held-out points), "
        f"τ_K = {tau:.3f}",
    )
    return {
        "linearization": fit.name,
        "r2_linearization": fit.r2_holdout,
        "linearization_params": fit.params,
        "linearization_points": {"fit": fit.n_fit, "holdout": fit.n_holdout},
        "linearization_plot": str(plot_path),
    }
