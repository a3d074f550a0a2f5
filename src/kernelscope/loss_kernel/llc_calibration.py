"""The LLC estimator checked on models whose learning coefficient is known, and a calibration of ε and γ.

λ̂ = nβ (E_w[L_n(w)] − L_n(w*)) (kernelscope.loss_kernel.sgld) is biased by the step size ε (discretization:
SGLD's stationary law is wider than the posterior by about a factor 1 / (1 − ε A / 4) along a direction of
precision A), by the localization γ (it pulls flat directions in: a quadratic direction of curvature h
contributes ½ nβh / (nβh + γ) instead of ½) and by too few draws. Known answers (MATH.md, "LLC on models
with known answers"):

* ``regular_regression(d)``: linear regression with unit Gaussian noise, d parameters: λ = d / 2;
* ``polynomial_potential(ks)``: K(w) = ½ Σ w_i^{2 k_i}: λ = Σ 1 / (2 k_i) (k_i = 1 is a regular direction);
* ``deep_linear_network(widths, r)``: a product of linear layers at a rank-r factorization: Aoyagi's λ
  (kernelscope.loss_kernel.known_llc).

``sweep`` runs ε × γ and ``calibrate`` keeps the setting a user would keep on a new model, from the
estimates alone: for each γ, the largest ε of the first plateau of λ̂ against ε (healthy estimates that
agree within ``tolerance`` from one ε to the next: below it the chains have not mixed, above it the
discretization bias grows); among the γ, the smallest with a plateau (least localization bias). No true
λ is used: the known models test the procedure (tests/loss_kernel/test_llc_calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.plotting import figure_writer, save_figure
from kernelscope.loss_kernel.known_llc import deep_linear_network_llc
from kernelscope.loss_kernel.sgld import PerSampleLoss, SGLDConfig, sample


@dataclass(frozen=True)
class KnownModel:
    """A model at its minimum w*, its data and per-sample loss, and its true learning coefficient."""

    name: str
    model: nn.Module
    loss_fn: PerSampleLoss
    x: torch.Tensor
    y: torch.Tensor
    true_llc: float


def _squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """½ (y − f)²: the negative log-likelihood of unit Gaussian noise, up to a constant."""
    return 0.5 * (outputs[:, 0] - targets) ** 2


def regular_regression(d: int, n: int = 1024, seed: int = 0) -> KnownModel:
    """y = xᵀ w0 + N(0, 1) noise, x ~ N(0, I_d); the model is set to the least-squares solution w*: λ = d / 2."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w0 = torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w0 + torch.randn(n, generator=gen, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y.unsqueeze(1)).solution.T)  # w* (1, d)
    return KnownModel(f"regular regression, d = {d}", model, _squared_error, x, y, d / 2)


class _Potential(nn.Module):
    """Outputs ½ Σ w_i^{2 k_i} for every row of its input (the data do not enter: L_n = K)."""

    def __init__(self, ks: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(len(ks), dtype=torch.float64))  # w* = 0
        self.register_buffer("powers", torch.tensor([2 * k for k in ks], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = 0.5 * (self.w**self.powers).sum()
        return value.expand(len(x), 1)


def polynomial_potential(ks: tuple[int, ...], n: int = 1024) -> KnownModel:
    """K(w) = ½ Σ w_i^{2 k_i} around w* = 0: λ = Σ 1 / (2 k_i)."""
    x = torch.zeros(n, 1, dtype=torch.float64)  # placeholders: the loss does not read the data
    name = "K(w) = ½ Σ w^" + "{" + ", ".join(str(2 * k) for k in ks) + "}"
    return KnownModel(name, _Potential(tuple(ks)), lambda out, _: out[:, 0], x, x[:, 0], sum(1 / (2 * k) for k in ks))


def _summed_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """½ ‖y − f‖² over the output coordinates: unit Gaussian noise on every output."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1)


def deep_linear_network(widths: tuple[int, ...], rank: int, n: int = 1024, seed: int = 0) -> KnownModel:
    """x ↦ W_L ⋯ W_1 x (no biases) at w* where every layer has rank ``rank`` (W_l = U_l V_lᵀ, Gaussian factors:
    the most degenerate factorizations, where the local and the global learning coefficient agree); targets
    are the network's own outputs at w* on x ~ N(0, I), so L_n(w*) = 0 and L_n − L_n(w*) is K_n itself.
    λ from Aoyagi's formula (known_llc.deep_linear_network_llc)."""
    gen = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(a, b, bias=False).double() for a, b in zip(widths, widths[1:])]
    with torch.no_grad():
        for layer in layers:
            out_dim, in_dim = layer.weight.shape
            u = torch.randn(out_dim, rank, generator=gen, dtype=torch.float64)
            v = torch.randn(in_dim, rank, generator=gen, dtype=torch.float64)
            layer.weight.copy_(u @ v.T / math.sqrt(rank * in_dim) if rank else torch.zeros(out_dim, in_dim))
    model = nn.Sequential(*layers)
    x = torch.randn(n, widths[0], generator=gen, dtype=torch.float64)  # (n, H_1)
    with torch.no_grad():
        y = model(x)  # (n, H_{L+1})
    name = f"deep linear network {list(widths)}, rank {rank}"
    return KnownModel(name, model, _summed_squared_error, x, y, deep_linear_network_llc(list(widths), rank))


@dataclass(frozen=True)
class Estimate:
    epsilon: float
    gamma: float
    llc: float
    llc_per_chain: tuple[float, ...]
    warnings: tuple[str, ...]


def estimate(known: KnownModel, config: SGLDConfig) -> Estimate:
    """λ̂ of a known model with one sampler setting (full-batch gradients when batch_size ≥ n); a setting whose
    chains diverge gives NaN with the sampler's message as its warning (a sweep goes on past it)."""
    try:
        result = sample(known.model, known.loss_fn, known.x, known.y, known.x[:1], known.y[:1], config)
    except KernelscopeError as error:
        return Estimate(config.epsilon, config.gamma, float("nan"), (), (str(error),))
    return Estimate(
        config.epsilon, config.gamma, result.llc, tuple(float(v) for v in result.llc_per_chain), tuple(result.warnings)
    )


def equal_time(base: SGLDConfig, epsilon: float) -> SGLDConfig:
    """``base`` at step size ``epsilon`` with its burn-in and spacing rescaled by base.epsilon / epsilon: the same
    Langevin time ε × steps (and so the same mixing) at every ε, which a singular model's flat directions need
    (at a fixed step count a smaller ε has simply not mixed, and the ε-plateau is lost)."""
    scale = base.epsilon / epsilon
    return replace(
        base,
        epsilon=epsilon,
        burn_in=max(1, round(base.burn_in * scale)),
        steps_between=max(1, round(base.steps_between * scale)),
    )


def sweep(
    known: KnownModel, base: SGLDConfig, epsilons: list[float], gammas: list[float], same_time: bool = False
) -> list[Estimate]:
    """λ̂ over the grid of ε × γ (every other sampler setting from ``base``), ε ascending within each γ;
    ``same_time``: the chains' length scaled to base.epsilon's Langevin time (``equal_time``)."""

    return [estimate(known, setting(base, e, g, same_time)) for g in gammas for e in sorted(epsilons)]


def setting(base: SGLDConfig, epsilon: float, gamma: float, same_time: bool = False) -> SGLDConfig:
    """``base`` at (ε, γ): one cell of ``sweep`` (its chains rescaled to base's Langevin time when ``same_time``)."""
    return replace(equal_time(base, epsilon) if same_time else replace(base, epsilon=epsilon), gamma=gamma)


def calibrate(estimates: list[Estimate], tolerance: float = 0.05) -> Estimate | None:
    """The kept setting (see the module's docstring): per γ, the largest ε of the first plateau of λ̂ in ε (a run
    of healthy estimates at consecutive ε, each within ``tolerance`` of the one before; the smallest ε may not
    have mixed yet, so the plateau may start later); the smallest γ that has one. None when no γ has."""
    for gamma in sorted({e.gamma for e in estimates}):
        row = sorted((e for e in estimates if e.gamma == gamma), key=lambda e: e.epsilon)
        kept = None
        for smaller, larger in zip(row, row[1:]):
            healthy = not smaller.warnings and not larger.warnings and np.isfinite(larger.llc)
            agree = abs(larger.llc - smaller.llc) <= tolerance * max(abs(smaller.llc), 1e-12)
            if healthy and agree:
                kept = larger
            elif kept is not None:
                break  # the first plateau has ended
        if kept is not None:
            return kept
    return None


@figure_writer
def plot_llc_against_epsilon(path: str | Path, known: KnownModel, estimates: list[Estimate]) -> Path:
    """λ̂ against ε (log scale), one line per γ, the true λ dashed: where the plateau is, and how far off."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for gamma in sorted({e.gamma for e in estimates}):
        row = sorted((e for e in estimates if e.gamma == gamma), key=lambda e: e.epsilon)
        ax.plot([e.epsilon for e in row], [e.llc for e in row], marker="o", label=f"γ = {gamma:g}")
    if math.isfinite(known.true_llc):  # a network has no known λ (NaN)
        ax.axhline(known.true_llc, color="black", ls="--", label=f"true λ = {known.true_llc:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel("SGLD step size ε")
    ax.set_ylabel("estimated LLC λ̂")
    ax.set_title(known.name, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
