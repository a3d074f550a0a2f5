"""Closed-form learning coefficients of linear networks (MATH.md, "LLC on models with known answers").

* ``reduced_rank_regression_llc``: y = B A x with A (H × M), B (N × H), true rank r: the four cases of Aoyagi &
  Watanabe 2005 ("Stochastic complexities of reduced rank regression in Bayesian estimation", Neural Networks
  18(7), Main Theorem).
* ``deep_linear_network_llc``: y = W_L ⋯ W_1 x with layer widths H_1 (input), …, H_{L+1} (output) and a product
  of rank r: Aoyagi 2024 ("Consideration on the learning efficiency of multiple-layered neural networks with
  linear units", Neural Networks 172, Main Theorem; used by Lau et al. 2023, arXiv 2308.12108, to test LLC
  estimators). With Δ_i = H_i − r it needs the subset Σ of the layers, |Σ| = ℓ + 1, with
      max_{σ∈Σ} Δ_σ < min_{k∉Σ} Δ_k,   Σ_{σ∈Σ} Δ_σ ≥ ℓ max_{σ∈Σ} Δ_σ,   Σ_{σ∈Σ} Δ_σ < ℓ min_{k∉Σ} Δ_k;
  with S = Σ_{σ∈Σ} Δ_σ, a = S − (⌈S/ℓ⌉ − 1) ℓ:
      λ = (r (H_1 + H_{L+1}) − r²) / 2 + a (ℓ − a) / (4ℓ) − ℓ (ℓ − 1) S² / (4ℓ²) + ½ Σ_{σ<σ'∈Σ} Δ_σ Δ_σ'.

The two are independent statements for two layers, and agree there (tests/loss_kernel/test_known_llc.py).
"""

from __future__ import annotations

import itertools
import math


def reduced_rank_regression_llc(m: int, h: int, n: int, r: int) -> float:
    """λ of y = B A x: input dimension ``m``, hidden ``h``, output ``n``, true rank ``r`` (r ≤ min(m, h, n))."""
    if not 0 <= r <= min(m, h, n):
        raise ValueError(f"the true rank r = {r} must lie in [0, min(m, h, n) = {min(m, h, n)}]")
    if m + h < n + r:
        return (h * m - h * r + n * r) / 2
    if n + h < m + r:
        return (h * n - h * r + m * r) / 2
    if m + n < h + r:
        return m * n / 2
    parity = (m + h + n + r) % 2  # the odd case adds 1
    return (2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2 + parity) / 8


def aoyagi_subset(deltas: list[int]) -> tuple[int, ...]:
    """The layer indices Σ of Aoyagi's theorem for Δ = ``deltas`` (searched over every subset of two or more)."""
    for size in range(2, len(deltas) + 1):
        for sigma in itertools.combinations(range(len(deltas)), size):
            inside = [deltas[i] for i in sigma]
            outside = [deltas[i] for i in range(len(deltas)) if i not in sigma]
            ell, total = size - 1, sum(inside)
            if outside and not max(inside) < min(outside):
                continue
            if total < ell * max(inside):
                continue
            if outside and not total < ell * min(outside):
                continue
            return sigma
    raise ValueError(f"no subset satisfies Aoyagi's conditions for Δ = {deltas}")  # the theorem says one exists


def deep_linear_network_llc(widths: list[int], r: int) -> float:
    """λ of a deep linear network with layer widths ``widths`` = [input, hidden…, output] whose product has rank
    ``r`` (r ≤ every width)."""
    if len(widths) < 2:
        raise ValueError("a deep linear network needs an input and an output width")
    if not 0 <= r <= min(widths):
        raise ValueError(f"the true rank r = {r} must lie in [0, min(widths) = {min(widths)}]")
    deltas = [w - r for w in widths]
    sigma = aoyagi_subset(deltas)
    inside = [deltas[i] for i in sigma]
    ell, total = len(sigma) - 1, sum(inside)
    a = total - (math.ceil(total / ell) - 1) * ell
    pairs = sum(inside[i] * inside[j] for i in range(len(inside)) for j in range(i + 1, len(inside)))
    return (
        (r * (widths[0] + widths[-1]) - r**2) / 2
        + a * (ell - a) / (4 * ell)
        - ell * (ell - 1) * total**2 / (4 * ell**2)
        + pairs / 2
    )
