"""The three sources of degeneracy of Bushnaq et al. (2024), per layer, and the LLC as an effective
parameter count.

1. Linear dependence among a layer's activations: the spectrum of the activation Gram
   G_act = (1/n) Σ_x h(x) h(x)ᵀ (uncentered: a direction the activations never enter is free).
2. Linear dependence among the gradients passed back to the layer: the spectrum of the gradient Gram
   G_grad = (1/n) Σ_x Σ_o ∇_h f_o(x) ∇_h f_o(x)ᵀ, with f the logits (the output Jacobian, summed over
   outputs: it does not vanish at a low-loss minimum the way the loss gradient does).
3. ReLUs that fire on the same inputs: neurons with identical on/off patterns over the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.structure.layers import OUTPUT, activations, chunks, jacobians
from kernelscope.structure.spectra import numerical_rank, participation_ratio, rank_to_mass, stacked_gram


def activation_moments(model: nn.Module, x: torch.Tensor, layer: str, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncentered second moment E[h hᵀ] (d, d) and mean E[h] (d,) of the layer's flattened activations, float64."""
    gram, total = None, None
    for chunk in chunks(x, chunk_size):
        h = activations(model, chunk, [layer])[layer].double().numpy()  # (b, d)
        gram = h.T @ h if gram is None else gram + h.T @ h
        total = h.sum(0) if total is None else total + h.sum(0)
    return gram / len(x), total / len(x)


def jacobian_gram(
    model: nn.Module, x: torch.Tensor, source: str, target: str, chunk_size: int, readout: torch.Tensor | None = None
) -> np.ndarray:
    """E_x[Jᵀ J] with J = ∂(readout · h_target)/∂h_source at x: (d_source, d_source) float64."""
    gram = None
    for chunk in chunks(x, chunk_size):
        part = stacked_gram(jacobians(model, chunk, source, target, readout=readout).double().numpy())  # jac: (b, r, d)
        gram = part if gram is None else gram + part
    return gram / len(x)


def activation_gram(model: nn.Module, x: torch.Tensor, layer: str, chunk_size: int) -> np.ndarray:
    """(1/n) Σ_x h hᵀ for the layer's flattened activations h: (d, d) float64."""
    return activation_moments(model, x, layer, chunk_size)[0]


def gradient_gram(model: nn.Module, x: torch.Tensor, layer: str, chunk_size: int) -> np.ndarray:
    """(1/n) Σ_x Jᵀ J with J = ∂ logits / ∂ h_layer (o, d) at x: (d, d) float64."""
    return jacobian_gram(model, x, layer, OUTPUT, chunk_size)


def gram_spectrum(gram: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, descending, negatives from round-off set to 0."""
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def spectrum_summary(eigenvalues: np.ndarray, rtol: float, mass: float) -> dict[str, float]:
    """Rank measures of a Gram spectrum (eigenvalues are squared singular values of the stacked vectors)."""
    s = np.sqrt(eigenvalues)
    rank = numerical_rank(s, rtol)
    return {
        "dim": int(len(eigenvalues)),
        "rank": rank,
        "degenerate_directions": int(len(eigenvalues) - rank),
        "rank_mass": rank_to_mass(s, mass),
        "participation": participation_ratio(s),
    }


@dataclass(frozen=True)
class FiringGroups:
    """Neurons of a ReLU layer grouped by their on/off pattern over the data."""

    dead: list[int]  # never fire
    always_on: list[int]  # fire on every input (the ReLU acts as the identity: a linear neuron)
    synchronized: list[list[int]]  # groups of ≥ 2 neurons, neither dead nor always on, with identical patterns

    def summary(self) -> dict[str, Any]:
        return {
            "dead": len(self.dead),
            "always_on": len(self.always_on),
            "sync_groups": len(self.synchronized),
            "sync_neurons": sum(len(g) for g in self.synchronized),
            "largest_sync_group": max((len(g) for g in self.synchronized), default=0),
        }


def firing_groups(h: np.ndarray) -> FiringGroups:
    """Group the columns of a ReLU layer's activations h (n, d) by their firing pattern h > 0."""
    fires = np.asarray(h) > 0  # (n, d)
    n = fires.shape[0]
    counts = fires.sum(axis=0)
    dead = [int(i) for i in np.flatnonzero(counts == 0)]
    always = [int(i) for i in np.flatnonzero(counts == n)]
    middle = np.flatnonzero((counts > 0) & (counts < n))
    groups: dict[bytes, list[int]] = {}
    for i in middle:
        groups.setdefault(np.packbits(fires[:, i]).tobytes(), []).append(int(i))
    synchronized = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    return FiringGroups(dead, always, synchronized)


def relu_activations(model: nn.Module, x: torch.Tensor, layer: str, chunk_size: int) -> np.ndarray:
    """The layer's activations over x, (n, d)."""
    return np.concatenate([activations(model, c, [layer])[layer].numpy() for c in chunks(x, chunk_size)])


def is_relu_layer(model: nn.Module, layer: str) -> bool:
    return isinstance(dict(model.named_modules()).get(layer), nn.ReLU)


def effective_parameters(model: nn.Module, llc: float | None) -> dict[str, float]:
    """The raw parameter count beside 2λ̂: a regular model has λ = d/2, so 2λ̂ counts the parameters
    the loss landscape actually uses near w* (singular learning theory)."""
    raw = int(sum(p.numel() for p in model.parameters()))
    out: dict[str, float] = {"raw_parameters": raw}
    if llc is not None:
        out.update(
            {"llc": float(llc), "effective_parameters": 2.0 * float(llc), "effective_fraction": 2.0 * float(llc) / raw}
        )
    return out
