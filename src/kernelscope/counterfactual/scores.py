"""Attribution scores from gradient features and kernels: the maths of each attributor (MATH.md).

Every score matrix is (n_query, N) float64 in the kernels' (query, train) orientation, with one sign
convention: τ(x, x_j) > 0 means training on x_j raises the target output f(x) = log(p_y / (1 − p_y)).
Gradients here are g = P ∇θ f (kernelscope.counterfactual.gradients); ∇θ ℓ = −(1 − p) g.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kernelscope.surrogate.attribution import attributions
from kernelscope.surrogate.kglm import KGLM


def grad_dot(g_query: np.ndarray, g_train: np.ndarray, loss_scale_train: np.ndarray) -> np.ndarray:
    """−⟨∇f(x), ∇ℓ(x_j)⟩ = (1 − p_j) ⟨g(x), g(x_j)⟩: (n, K), (N, K), (N,) -> (n, N)."""
    return (g_query @ g_train.T) * loss_scale_train[None, :]


def grad_cos(g_query: np.ndarray, g_train: np.ndarray) -> np.ndarray:
    """cos(∇f(x), −∇ℓ(x_j)) = cos(g(x), g(x_j)); a zero gradient has cosine 0 with everything."""
    nq, nt = np.linalg.norm(g_query, axis=1), np.linalg.norm(g_train, axis=1)
    out = g_query @ g_train.T
    denom = np.outer(nq, nt)
    return np.divide(out, denom, out=np.zeros_like(out), where=denom > 0)


def tracin(checkpoints: Iterable[tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """TracIn-CP (Pruthi et al. 2020): Σ_t η_t ⟨∇ℓ(x; θ_t), ∇ℓ(x_j; θ_t)⟩.

    Each checkpoint is (η_t, g_query (n, K), loss_scale_query (n,), g_train (N, K), loss_scale_train (N,));
    ⟨∇ℓ(x), ∇ℓ(x_j)⟩ = (1 − p_x)(1 − p_j) ⟨g(x), g(x_j)⟩.
    """
    total = None
    for lr, gq, sq, gt, st in checkpoints:
        term = lr * (gq @ gt.T) * sq[:, None] * st[None, :]
        total = term if total is None else total + term
    if total is None:
        raise ValueError("TracIn needs at least one checkpoint")
    return total


def trak_ridge(g_train: np.ndarray, ridge: float) -> float:
    """TRAK's absolute λ: ``ridge`` × tr(ΦᵀΦ) / K, a fraction of the mean eigenvalue of Φ (N, K)."""
    return ridge * float(np.einsum("ij,ij->", g_train, g_train)) / g_train.shape[1]


def trak_one_model(g_query: np.ndarray, g_train: np.ndarray, loss_scale_train: np.ndarray, ridge: float) -> np.ndarray:
    """TRAK for one model (Park et al. 2023): g(x) (ΦᵀΦ + λI)⁺ Φᵀ diag(1 − p_j), Φ = g_train (N, K).

    λ = ridge × tr(ΦᵀΦ) / K (a fraction of the mean eigenvalue, so one setting fits any scale of gradients).
    Computed on the smaller side: (ΦᵀΦ + λI)⁺ Φᵀ = Φᵀ (ΦΦᵀ + λI)⁺, so K > N costs an N × N solve. The
    pseudo-inverse (eigenvalues below size·eps of the largest dropped) keeps λ = 0 defined.
    """
    n, k = g_train.shape
    lam = trak_ridge(g_train, ridge)
    small = g_train.T @ g_train if k <= n else g_train @ g_train.T  # (K, K) or (N, N)
    evals, evecs = np.linalg.eigh(small + lam * np.eye(len(small)))
    keep = evals > max(evals.max(), 0.0) * len(small) * np.finfo(np.float64).eps
    inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    if k <= n:
        out = g_query @ inv @ g_train.T
    else:
        out = (g_query @ g_train.T) @ inv
    return out * loss_scale_train[None, :]


def trak(models: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], ridge: float) -> np.ndarray:
    """TRAK-M: the mean over models of ``trak_one_model`` ((g_query, g_train, loss_scale_train) per model)."""
    scores = [trak_one_model(gq, gt, st, ridge) for gq, gt, st in models]
    if not scores:
        raise ValueError("TRAK needs at least one model")
    return np.mean(scores, axis=0)


def label_signed_kernel(kernel: np.ndarray, y_query: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """κ(x, x_j) × (+1 if x_j's label is x's class, else −1): what a kernel says for free."""
    same = y_train[None, :] == y_query[:, None]
    return np.where(same, 1.0, -1.0) * np.asarray(kernel, dtype=np.float64)


def kglm_to_query_class(model: KGLM, kernel: np.ndarray, y_query: np.ndarray) -> np.ndarray:
    """The NTK paper's Eq. 3 attribution (kernelscope.surrogate.attribution) to the logit of x's class c = y.

    One logit (binary): the logit is the log-odds of class 1, so a query of class 0 takes its negative.
    """
    per_logit = attributions(model, kernel)  # (n, C_out, N)
    rows = np.arange(len(y_query))
    if per_logit.shape[1] == 1:
        return np.where(y_query == 1, 1.0, -1.0)[:, None] * per_logit[:, 0]
    return per_logit[rows, y_query]
