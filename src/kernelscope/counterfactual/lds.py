"""The linear datamodeling score (Park et al. 2023) and bootstrap intervals over test points."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def datamodel_predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Σ_{j∈S_k} τ(x, x_j): scores (n, N), masks (m, N) bool -> (m, n)."""
    return masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64).T


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching columns of a and b (m, n) -> (n,); NaN where either column is constant."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)  # ties share their average rank
    ra, rb = ra - ra.mean(0), rb - rb.mean(0)
    denom = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(0) / np.where(denom > 0, denom, 1.0), np.nan)


def lds_per_query(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """For each test point, ρ between the attribution's predictions and the retrained outputs (m, n) -> (n,)."""
    if masks.shape[0] != outputs.shape[0] or outputs.shape[1] != scores.shape[0] or masks.shape[1] != scores.shape[1]:
        raise ValueError(
            f"scores {scores.shape}, masks {masks.shape} and outputs {outputs.shape} do not describe one experiment"
        )
    return spearman_columns(datamodel_predictions(scores, masks), outputs)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # points averaged (NaN ones left out)


def bootstrap_mean(values: np.ndarray, seed: int, resamples: int = 1000, level: float = 0.95) -> Interval:
    """The mean over points with a percentile bootstrap interval (points resampled with replacement, seeded)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng([seed, 0xB007])
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(1)
    tail = (1.0 - level) / 2
    return Interval(float(v.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)), len(v))


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float], n: int, seed: int, resamples: int = 1000, level: float = 0.95
) -> Interval:
    """A statistic of n points (a function of their row indices) with a percentile bootstrap interval."""
    rng = np.random.default_rng([seed, 0xB007, 1])
    draws = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)])
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - level) / 2
    value = float(statistic(np.arange(n)))
    if len(draws) == 0:
        return Interval(value, float("nan"), float("nan"), n)
    return Interval(value, float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)), n)
