"""Loss kernel: covariance and correlation of per-sample losses across posterior draws (MATH.md).

K(z, z') = Cov_w[ℓ(z; w), ℓ(z'; w)] over all draws of all chains; R = D^{-1/2} K D^{-1/2}.
"""

from __future__ import annotations

import numpy as np


def loss_covariance(losses: np.ndarray, center_chains: bool = False) -> np.ndarray:
    """(n_probe, chains, draws) losses -> (n_probe, n_probe) covariance over draws (float64, ddof = 1).

    ``center_chains`` subtracts each chain's own mean first (within-chain covariance), which
    removes between-chain offsets.
    """
    x = np.asarray(losses, dtype=np.float64)
    if center_chains:
        x = x - x.mean(axis=2, keepdims=True)
    flat = x.reshape(x.shape[0], -1)  # (n_probe, chains · draws)
    flat = flat - flat.mean(axis=1, keepdims=True)
    dof = flat.shape[1] - (x.shape[1] if center_chains else 1)
    return flat @ flat.T / max(dof, 1)


def loss_correlation(cov: np.ndarray) -> np.ndarray:
    """R = D^{-1/2} K D^{-1/2}; points with zero variance get zero rows and columns."""
    d = np.sqrt(np.clip(np.diag(cov), 0, None))
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    return cov * inv[:, None] * inv[None, :]
