"""Exact NTK-family Gram blocks from layer factors, without full per-sample Jacobians.

For an unshared linear layer, Σ_c ⟨δ_c aᵀ, δ'_c a'ᵀ⟩ = (a·a') Σ_c δ_c·δ'_c, so the layer's block
is the Hadamard product of an activation Gram and a flattened δ Gram (MATH.md). A layer that shares
its weight over T positions (a convolution, a linear map over a sequence) has per-class gradient
Σ_t δ_{c,t} a_tᵀ; ``compact`` keeps it as that materialized gradient whenever the gradient is smaller
than its factors (C·d_out·d_in < T·(d_in + C·d_out): every convolution of a CIFAR ResNet), so a Gram
block is one matrix product and the representation can be cached. Layer contributions are summed in
float64; each Gram product runs in the model's dtype.

The pNTK uses the same Gram on the factors of Σ_c F_c (``layer_factors(..., weights=ones)``, one
class), divided by C.
"""

from __future__ import annotations

import torch

from kernelscope.kernels.layers import Dense, Factor, Outer


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _materialize_is_smaller(f: Outer) -> bool:
    _, c, t, d_out = f.delta.shape
    d_in = f.act.shape[2]
    return c * d_out * d_in < t * (d_in + c * d_out)


def compact(factors: list[Factor]) -> list[Factor]:
    """The same factors, each shared layer as its materialized per-class gradient (b, C, d_out·d_in) when smaller."""
    return [
        Dense(f.name, f.materialize()) if isinstance(f, Outer) and f.shared and _materialize_is_smaller(f) else f
        for f in factors
    ]


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
