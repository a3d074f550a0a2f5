"""The interaction basis (MATH.md; Bushnaq et al. 2024) and ablation curves against PCA.

Back to front over the listed layers: the output keeps its logit coordinates; for layer l,
1. whiten: G = E[h hᵀ] = U Λ Uᵀ, keep eigenvalues above rtol·max, z = W h with W = Λ^{-1/2} Uᵀ (r × d);
2. take J̃ = ∂(C_{l+1} h_{l+1})/∂z = C_{l+1} J_l W⁺ (W⁺ = U Λ^{1/2}), with C_{l+1} the next layer's
   interaction coordinates, and M = E_x[J̃ᵀ J̃] = V Σ Vᵀ;
3. interaction coordinates f = Vᵀ z, ordered by Σ (how strongly each direction drives the next
   layer); C_l = Σ^{1/2} Vᵀ W, so the layer before weighs this layer's directions by importance.
Whitening makes the basis independent of any invertible change of coordinates of h_l (up to the
order of equal eigenvalues).

Ablation: the coordinates of a basis are removed smallest-importance first (mean-ablated: set to
their mean over the fit points) and the test accuracy is read off. PCA (centered covariance,
smallest variance first) is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kernelscope.models.heads import predictions
from kernelscope.structure.degeneracy import activation_moments, jacobian_gram
from kernelscope.structure.layers import OUTPUT, run_with


@dataclass(frozen=True)
class Basis:
    """f = forward @ (h − offset); h = offset + back @ f on the data; coordinates ordered by importance."""

    name: str
    forward: np.ndarray  # (r, d)
    back: np.ndarray  # (d, r)
    offset: np.ndarray  # (d,)
    importance: np.ndarray  # (r,) descending
    fit_mean: np.ndarray  # (r,) mean coordinates over the fit points


def _eigh_desc(matrix: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues above rtol·max (descending) and their eigenvectors (columns) of a symmetric PSD matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    values, vectors = values[::-1], vectors[:, ::-1]
    keep = values > rtol * max(values[0], 0.0) if values[0] > 0 else np.zeros(len(values), bool)
    return values[keep], vectors[:, keep]


def pca_basis(gram: np.ndarray, mean: np.ndarray, rtol: float) -> Basis:
    cov = gram - np.outer(mean, mean)
    values, q = _eigh_desc(cov, rtol)
    return Basis("pca", q.T, q, mean, values, np.zeros(len(values)))


def interaction_bases(
    model: nn.Module, x: torch.Tensor, layers: list[str], *, chunk_size: int, rtol: float
) -> dict[str, Basis]:
    """The interaction basis of every listed layer but the last (whose own coordinates are kept)."""
    model = model.eval()
    bases: dict[str, Basis] = {}
    readout: torch.Tensor | None = None  # C_{l+1}: (r_{l+1}, d_{l+1}); None for the logits
    for layer, following in reversed(list(zip(layers[:-1], layers[1:]))):
        gram, mean = activation_moments(model, x, layer, chunk_size)
        lam, u = _eigh_desc(gram, rtol)
        whiten = (u / np.sqrt(lam)).T  # W: (r, d)
        unwhiten = u * np.sqrt(lam)  # W⁺: (d, r)
        m = unwhiten.T @ jacobian_gram(model, x, layer, following, chunk_size, readout=readout) @ unwhiten  # (r, r)
        sigma, v = np.linalg.eigh((m + m.T) / 2)
        sigma, v = np.clip(sigma[::-1], 0.0, None), v[:, ::-1]
        forward = v.T @ whiten  # (r, d)
        bases[layer] = Basis("interaction", forward, unwhiten @ v, np.zeros(len(mean)), sigma, forward @ mean)
        live = sigma > rtol * max(sigma[0], 1e-300)  # directions that drive the next layer; the rest add nothing to J̃
        readout = torch.from_numpy(np.sqrt(sigma[live])[:, None] * forward[live]).to(next(model.parameters()).dtype)
    return {layer: bases[layer] for layer in layers[:-1]}


def ablated_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, basis: Basis, kept: int, chunk_size: int = 4096
) -> float:
    """Test accuracy with every coordinate after the first ``kept`` set to its fit mean (the rest of h untouched)."""
    removed = slice(kept, None)
    dtype = next(model.parameters()).dtype
    forward = torch.from_numpy(basis.forward[removed]).to(dtype)  # (r_removed, d)
    back = torch.from_numpy(basis.back[:, removed]).to(dtype)  # (d, r_removed)
    offset = torch.from_numpy(basis.offset).to(dtype)
    target = torch.from_numpy(basis.fit_mean[removed]).to(dtype)  # (r_removed,)

    def replace(h: torch.Tensor) -> torch.Tensor:  # (b, d) -> (b, d)
        f = (h - offset) @ forward.T
        return h + (target - f) @ back.T

    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), chunk_size):
            xb = x[start : start + chunk_size]
            out = run_with(model, xb, layer, replace, OUTPUT) if kept < len(basis.importance) else model(xb)
            correct += int((predictions(out) == y[start : start + chunk_size]).sum())
    return correct / len(x)


def kept_grid(r: int, steps: int) -> list[int]:
    """Numbers of directions kept: every count up to 16, then ``steps`` evenly spaced up to r."""
    return sorted({*range(min(r, 16) + 1), *np.round(np.linspace(0, r, steps)).astype(int).tolist()})


def ablation_curve(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, basis: Basis, steps: int
) -> dict[str, list]:
    kept = kept_grid(len(basis.importance), steps)
    return {"kept": kept, "accuracy": [ablated_accuracy(model, x, y, layer, basis, k) for k in kept]}


def directions_needed(curve: dict[str, list], fraction: float = 0.99) -> int:
    """Fewest directions kept with accuracy ≥ fraction × the unablated accuracy."""
    full = curve["accuracy"][-1]
    return next(k for k, a in zip(curve["kept"], curve["accuracy"]) if a >= fraction * full)
