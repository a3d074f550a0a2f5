"""Is a sampler run trustworthy? Health checks of SGLD draws and the curvature its step size must respect.

Traces far below L_n(w*) or early spikes mean ε is too large or γ too small; chains that disagree or drift
(split R-hat) or leave the low-loss region have not sampled the localized posterior. A gradient step of size
ε/2 on nβ L_n + γ/2 ‖w − w*‖² multiplies the sharpest direction (curvature nβ λ_max + γ) by
1 − ε (nβ λ_max + γ) / 2: past 1 it overshoots, past 2 the chain diverges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from kernelscope.loss_kernel.sgld import SGLDResult


def top_curvature(
    loss: Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor],
    params: dict[str, torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    seed: int,
    iterations: int = 20,
) -> float:
    """λ_max of ∇²loss(params; xb, yb) by power iteration on Hessian-vector products (forward over reverse
    mode); NaN when the model has an operation without forward-mode derivatives."""
    from torch.func import grad, jvp

    gen = torch.Generator().manual_seed(seed)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in params.items()}
    gradient = grad(lambda p: loss(p, xb, yb))
    value = math.nan
    try:
        for _ in range(iterations):
            norm = torch.sqrt(sum((t**2).sum() for t in v.values()))
            v = {k: t / norm for k, t in v.items()}
            hv = jvp(gradient, (params,), (v,))[1]
            value = float(sum((hv[k] * v[k]).sum() for k in v))  # Rayleigh quotient vᵀHv, v of unit length
            v = hv
    except (RuntimeError, NotImplementedError):
        return math.nan
    return value


STABILITY_LIMIT = 1.0  # ε (nβ λ_max + γ) / 2 above this: the drift step flips sign along the sharpest direction
RHAT_LIMIT = 1.1  # split R-hat above this: the chains have not mixed (Gelman et al., Bayesian Data Analysis)
EXCESS_LOSS_LIMIT = 1.0  # nats (or loss units) of mean excess training loss: the draws no longer preserve low loss


def split_rhat(x: np.ndarray) -> float:
    """Split R-hat of (chains, draws) values: each chain halved, between-half variance against within-half.

    Near 1 when every half samples the same law; above 1 when chains disagree or drift (wander away).
    """
    half = x.shape[1] // 2
    if half < 2:
        return float("nan")
    halves = np.concatenate([x[:, :half], x[:, half : 2 * half]])  # (2 · chains, half)
    within = halves.var(axis=1, ddof=1).mean()
    between = half * halves.mean(axis=1).var(ddof=1)
    if within <= 0:
        return 1.0 if between <= 0 else float("inf")
    return float(np.sqrt(((half - 1) / half * within + between / half) / within))


def health_warnings(result: SGLDResult, section: str = "loss_kernel") -> list[str]:
    """The module's checks on one run, each failed one a sentence naming the fix (``section``: its settings)."""
    # (checked in tests/loss_kernel/test_llc_calibration.py)
    notes = []
    draws = result.draw_train_losses
    rhat = split_rhat(draws)
    if draws.shape[0] > 1 and rhat > RHAT_LIMIT:
        per_chain = ", ".join(f"{v:.3g}" for v in draws.mean(axis=1))
        notes.append(
            f"the chains disagree or drift (split R-hat of L_n over draws {rhat:.3g} > {RHAT_LIMIT}; chain means "
            f"{per_chain}): raise gamma, or more burn_in and draws."
        )
    excess = draws.mean() - result.train_loss_at_optimum
    if excess > EXCESS_LOSS_LIMIT:
        notes.append(
            f"the draws leave the low-loss region (mean L_n {draws.mean():.4g} against L_n(w*) = "
            f"{result.train_loss_at_optimum:.4g}); raise gamma or lower nbeta."
        )
    if draws.mean() < result.train_loss_at_optimum - 0.5 * abs(result.train_loss_at_optimum) - 1e-6:
        notes.append(
            f"the chains' mean loss {draws.mean():.4g} is far below L_n(w*) = {result.train_loss_at_optimum:.4g}: "
            "w* is not a local minimum at this temperature; raise gamma or lower epsilon."
        )
    # A spike is a transient: the first tenth of the steps reaching far above anything the last tenth (a window
    # of the same length, so heavy-tailed equilibrium fluctuations count alike) reaches.
    window = max(1, result.trace.shape[1] // 10)
    early, late = result.trace[:, :window].max(), result.trace[:, -window:].max()
    if early > 10 * max(late, 1e-8):
        notes.append(f"early loss spike ({early:.4g} against at most {late:.4g} at the end); lower epsilon.")
    if result.stability > STABILITY_LIMIT:  # NaN (no curvature taken) compares False
        largest = STABILITY_LIMIT * result.epsilon / result.stability
        notes.append(
            f"the step is too large for the curvature at the draws: epsilon (nbeta lambda_max + gamma) / 2 = "
            f"{result.stability:.3g} > {STABILITY_LIMIT:g} (lambda_max {result.curvature:.3g} of the loss Hessian at "
            f"chain 0's last draw), so each step overshoots along the sharpest direction; lower "
            f"{section}.epsilon to at most {largest:.2g}."
        )
    return notes
