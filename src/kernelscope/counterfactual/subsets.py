"""Seeded training subsets for datamodels (Park et al. 2023; Ilyas et al. 2022) and the data they select."""

from __future__ import annotations

import numpy as np

from kernelscope.core.errors import ParamsError


def subset_size(n_train: int, alpha: float) -> int:
    """round(α N), refused when it leaves no point or every point (then nothing is counterfactual)."""
    if not 0.0 < alpha < 1.0:
        raise ParamsError(f"counterfactual.alpha is {alpha}; it must lie strictly between 0 and 1 (e.g. 0.5).")
    size = int(round(alpha * n_train))
    if not 0 < size < n_train:
        raise ParamsError(
            f"counterfactual.alpha = {alpha} keeps {size} of {n_train} training points; "
            "choose an alpha that keeps at least one point and leaves at least one out."
        )
    return size


def draw_subsets(n_train: int, m: int, alpha: float, seed: int) -> np.ndarray:
    """(m, N) bool masks, each selecting exactly round(α N) points uniformly without replacement.

    Subset k depends only on (seed, k), so a block of subsets can be drawn (and cached) on its own.
    """
    if m < 1:
        raise ParamsError(f"counterfactual.m is {m}; draw at least one subset (TRAK and dattri use 100).")
    size = subset_size(n_train, alpha)
    masks = np.zeros((m, n_train), dtype=bool)
    for k in range(m):
        masks[k, subset_rows(n_train, size, seed, k)] = True
    return masks


def subset_rows(n_train: int, size: int, seed: int, k: int) -> np.ndarray:
    """The sorted training rows of subset k: (size,) int64."""
    rng = np.random.default_rng([seed, 0x5EB5E7, k])
    return np.sort(rng.choice(n_train, size=size, replace=False)).astype(np.int64)
