"""Exact NTK-family Gram blocks from layer factors, without per-sample Jacobians.

For an unshared linear layer, Σ_c ⟨δ_c aᵀ, δ'_c a'ᵀ⟩ = (a·a') Σ_c δ_c·δ'_c, so the layer's block
is the Hadamard product of an activation Gram and a flattened δ Gram (MATH.md). Shared layers
(convolutions) and small dense layers use their per-layer gradients. Layer contributions are
summed in float64; each Gram product runs in the model's dtype.
"""

from __future__ import annotations

import torch

from kernelscope.kernels.layers import Factor, Outer


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _summed_over_classes(f: Factor) -> torch.Tensor:
    """Σ_c g_c per sample: (b, p) — the gradient of Σ_c F_c (pNTK)."""
    if isinstance(f, Outer):
        if not f.shared:
            return _flat(torch.einsum("bo,bi->boi", f.delta.sum(1)[:, 0], f.act[:, 0]))
        return f.materialize().sum(1)
    return f.grad.sum(1)


def trace_gram(q: list[Factor], t: list[Factor]) -> torch.Tensor:
    """trNTK0 block Σ_c ⟨g_c(x_q), g_c(x_t)⟩: (n_q, n_t) float64."""
    total = None
    for fq, ft in zip(q, t):
        if isinstance(fq, Outer) and not fq.shared:
            block = (fq.act[:, 0] @ ft.act[:, 0].T) * (_flat(fq.delta) @ _flat(ft.delta).T)
        elif isinstance(fq, Outer):
            block = _flat(fq.materialize()) @ _flat(ft.materialize()).T
        else:
            block = _flat(fq.grad) @ _flat(ft.grad).T
        total = block.double() if total is None else total + block.double()
    return total


def trace_diag(q: list[Factor]) -> torch.Tensor:
    """Σ_c ‖g_c(x)‖² per sample: (n,) float64."""
    total = None
    for f in q:
        if isinstance(f, Outer) and not f.shared:
            d = (f.act[:, 0] ** 2).sum(1) * (_flat(f.delta) ** 2).sum(1)
        elif isinstance(f, Outer):
            d = (_flat(f.materialize()) ** 2).sum(1)
        else:
            d = (_flat(f.grad) ** 2).sum(1)
        total = d.double() if total is None else total + d.double()
    return total


def pseudo_gram(q: list[Factor], t: list[Factor], n_classes: int) -> torch.Tensor:
    """pNTK block (1/C) ⟨∇ Σ_c F_c(x_q), ∇ Σ_c F_c(x_t)⟩: (n_q, n_t) float64."""
    total = None
    for fq, ft in zip(q, t):
        if isinstance(fq, Outer) and not fq.shared:
            block = (fq.act[:, 0] @ ft.act[:, 0].T) * (fq.delta.sum(1)[:, 0] @ ft.delta.sum(1)[:, 0].T)
        else:
            block = _summed_over_classes(fq) @ _summed_over_classes(ft).T
        total = block.double() if total is None else total + block.double()
    return total / n_classes


def pseudo_diag(q: list[Factor], n_classes: int) -> torch.Tensor:
    total = None
    for f in q:
        if isinstance(f, Outer) and not f.shared:
            d = (f.act[:, 0] ** 2).sum(1) * (f.delta.sum(1)[:, 0] ** 2).sum(1)
        else:
            d = (_summed_over_classes(f) ** 2).sum(1)
        total = d.double() if total is None else total + d.double()
    return total / n_classes
