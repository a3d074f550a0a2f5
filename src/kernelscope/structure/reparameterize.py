"""Changes of coordinates of a hidden layer that leave the network's function unchanged, and the
check that coordinate-free measures survive them while neuron-basis measures do not.

A hidden layer h sits between a producing linear map and a consuming one (modules in registration
order, as in nn.Sequential): h = σ(W_in a + b_in), next = W_out h + b_out. Then
- a permutation P:            W_in ← P W_in, b_in ← P b_in, W_out ← W_out Pᵀ (any σ acting per neuron);
- a positive diagonal D:      W_in ← D W_in, b_in ← D b_in, W_out ← W_out D⁻¹ (σ positive-homogeneous: ReLU);
- an invertible matrix A:     W_in ← A W_in, b_in ← A b_in, W_out ← W_out A⁻¹ (no σ: h is the linear map's output).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.structure.layers import activations
from kernelscope.structure.spectra import borderline, layer_spectra

PASSIVE = (nn.Identity, nn.Dropout)  # modules that may sit between a hidden layer and its consumer
HOMOGENEOUS = (nn.ReLU,)  # σ(c·z) = c·σ(z) for c > 0


@dataclass(frozen=True)
class HiddenSite:
    layer: str
    producer: str  # the nn.Linear computing the layer's coordinates
    consumer: str  # the nn.Linear reading them
    activation: bool  # a ReLU sits between producer and layer


def hidden_site(model: nn.Module, layer: str) -> HiddenSite:
    """Locate the linear maps around a hidden layer, or say why the layer cannot be reparameterized."""
    names = [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    if layer not in modules:
        raise KernelscopeError(f"layer {layer!r} is not a module of the model; choose from {names}.")
    i = names.index(layer)
    if isinstance(modules[layer], nn.Linear):
        producer, activation = layer, False
    elif isinstance(modules[layer], HOMOGENEOUS) and i > 0 and isinstance(modules[names[i - 1]], nn.Linear):
        producer, activation = names[i - 1], True
    else:
        raise KernelscopeError(
            f"layer {layer!r} ({type(modules[layer]).__name__}) "
            "is neither an nn.Linear output nor a ReLU right after one; "
            "only such layers can be reparameterized."
        )
    for name in names[i + 1 :]:
        if isinstance(modules[name], nn.Linear):
            return HiddenSite(layer, producer, name, activation)
        if not isinstance(modules[name], PASSIVE):
            break
    raise KernelscopeError(
        f"layer {layer!r} is not read directly by an nn.Linear; only such layers can be reparameterized."
    )


def reparameterizable(model: nn.Module, layer: str) -> bool:
    try:
        hidden_site(model, layer)
        return True
    except KernelscopeError:
        return False


def change_coordinates(model: nn.Module, layer: str, a: torch.Tensor, a_inverse: torch.Tensor) -> nn.Module:
    """A copy of the model whose layer reads h' = A h, with the consumer undoing A; same function."""
    site = hidden_site(model, layer)
    new = copy.deepcopy(model)
    modules = dict(new.named_modules())
    producer, consumer = modules[site.producer], modules[site.consumer]
    with torch.no_grad():
        a, a_inverse = a.to(producer.weight.dtype), a_inverse.to(producer.weight.dtype)
        producer.weight.copy_(a @ producer.weight)
        if producer.bias is not None:
            producer.bias.copy_(a @ producer.bias)
        consumer.weight.copy_(consumer.weight @ a_inverse)
    return new


def permute(model: nn.Module, layer: str, perm: np.ndarray) -> nn.Module:
    """Neuron i of the new layer is neuron perm[i] of the old one."""
    p = torch.eye(len(perm))[torch.as_tensor(perm)]  # (d, d): (P h)_i = h_perm[i]
    return change_coordinates(model, layer, p, p.T)


def scale(model: nn.Module, layer: str, factors: np.ndarray) -> nn.Module:
    """Multiply neuron i by factors[i] > 0 (ReLU layers and linear layers)."""
    factors = np.asarray(factors, dtype=np.float64)
    if (factors <= 0).any():
        raise KernelscopeError("scaling factors must be positive: a ReLU commutes only with positive scalings.")
    d = torch.as_tensor(factors)
    return change_coordinates(model, layer, torch.diag(d), torch.diag(1.0 / d))


def linear_change(model: nn.Module, layer: str, a: np.ndarray) -> nn.Module:
    """Any invertible change of coordinates, for a layer with no nonlinearity."""
    if hidden_site(model, layer).activation:
        raise KernelscopeError(
            f"layer {layer!r} is a ReLU output: only permutations and positive scalings keep its function."
        )
    a64 = torch.as_tensor(np.asarray(a, dtype=np.float64))
    return change_coordinates(model, layer, a64, torch.linalg.inv(a64))


def neuron_measures(model: nn.Module, x: torch.Tensor, layer: str) -> dict[str, np.ndarray]:
    """Measures that read the neuron basis: per neuron, the fraction of inputs on which it is nonzero,
    its mean |activation| and the norms of its incoming and outgoing weights; and the Hoyer sparsity
    of the activation vectors (1 for one active neuron, 0 for all equal)."""
    site = hidden_site(model, layer)
    modules = dict(model.named_modules())
    h = activations(model, x, [layer])[layer].double().numpy()  # (n, d)
    d = h.shape[1]
    l1, l2 = np.abs(h).sum(1), np.sqrt((h**2).sum(1))
    hoyer = (np.sqrt(d) - l1 / np.maximum(l2, 1e-300)) / (np.sqrt(d) - 1)
    return {
        "fraction_active": (np.abs(h) > 0).mean(0),
        "mean_abs_activation": np.abs(h).mean(0),
        "incoming_norm": modules[site.producer].weight.detach().double().norm(dim=1).numpy(),
        "outgoing_norm": modules[site.consumer].weight.detach().double().norm(dim=0).numpy(),
        "hoyer_sparsity": np.array([hoyer[l2 > 0].mean()]),
    }


def random_transforms(
    model: nn.Module, layers: list[str], seed: int, scale_range: tuple[float, float] = (0.5, 2.0)
) -> dict[str, tuple[nn.Module, float]]:
    """Seeded function-preserving copies: every reparameterizable layer permuted, scaled, or (linear
    layers only) mixed by an invertible matrix; each with the largest condition number of its changes."""
    rng = np.random.default_rng(seed)
    sites = [hidden_site(model, layer) for layer in layers if reparameterizable(model, layer)]
    out: dict[str, tuple[nn.Module, float]] = {}
    if not sites:
        return out
    width = {s.layer: dict(model.named_modules())[s.producer].weight.shape[0] for s in sites}
    permuted, scaled, kappa = model, model, 1.0
    for s in sites:
        permuted = permute(permuted, s.layer, rng.permutation(width[s.layer]))
        factors = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]), width[s.layer]))
        scaled = scale(scaled, s.layer, factors)
        kappa = max(kappa, float(factors.max() / factors.min()))
    out["permutation"], out["scaling"] = (permuted, 1.0), (scaled, kappa)
    linear = [s for s in sites if not s.activation]
    if linear:
        mixed, kappa = model, 1.0
        for s in linear:
            n = width[s.layer]
            q, _ = np.linalg.qr(rng.standard_normal((n, n)))
            a = q @ np.diag(np.exp(rng.uniform(-0.7, 0.7, n)))  # well-conditioned, far from a permutation
            mixed = linear_change(mixed, s.layer, a)
            kappa = max(kappa, float(np.linalg.cond(a)))
        out["invertible_linear"] = (mixed, kappa)
    return out


RANK_MEASURES = {
    "rank_per_point_mean": "coordinate-free",
    "rank_stacked": "coordinate-free",
    "rank_mass_stacked": "spectral shape",
    "participation_stacked": "spectral shape",
}


def coordinate_check(
    model: nn.Module, x: torch.Tensor, layers: list[str], *, seed: int, chunk_size: int, rtol: float, mass: float
) -> dict[str, Any]:
    """Apply each function-preserving transform and compare rank measures and neuron-basis measures.

    Rows: transform, measure, where, kind ('coordinate-free' | 'spectral shape' | 'neuron basis'),
    before, after, changed. A rank counted at a tolerance may move only by the singular values that
    lie within the transform's condition-number band around the tolerance ('allowed'; 0 for
    permutations, whose ranks must match exactly); 'within_bound' checks that. The spectral-shape
    measures keep under permutations and orthogonal maps; neuron-basis measures are expected to change.
    """
    model = model.eval()
    base = layer_spectra(model, x, layers, chunk_size=chunk_size, rtol=rtol, mass=mass)
    sites = [layer for layer in layers if reparameterizable(model, layer)]
    with torch.no_grad():
        y = model(x)
    rows: list[dict[str, Any]] = []
    output_change: dict[str, float] = {}
    for name, (new, kappa) in random_transforms(model, layers, seed).items():
        new = new.eval()
        with torch.no_grad():
            output_change[name] = float((new(x) - y).abs().max() / y.abs().max().clamp_min(1e-30))
        after = layer_spectra(new, x, layers, chunk_size=chunk_size, rtol=rtol, mass=mass)
        band = kappa**2
        for b, a in zip(base, after):
            allowed = {
                "rank_per_point_mean": float(np.mean([borderline(s, rtol, band) for s in b.per_point])),
                "rank_stacked": float(borderline(b.stacked, rtol, band)),
            }
            for measure, kind in RANK_MEASURES.items():
                before_v, after_v = float(b.summary[measure]), float(a.summary[measure])
                row = {
                    "transform": name,
                    "measure": measure,
                    "where": f"{b.source}→{b.target}",
                    "kind": kind,
                    "before": before_v,
                    "after": after_v,
                    "changed": bool(not np.isclose(before_v, after_v, rtol=1e-6, atol=1e-9)),
                }
                if measure in allowed:
                    row.update(
                        {
                            "allowed": allowed[measure],
                            "within_bound": bool(abs(after_v - before_v) <= allowed[measure] + 1e-9),
                        }
                    )
                rows.append(row)
        for layer in sites:
            old_m, new_m = neuron_measures(model, x, layer), neuron_measures(new, x, layer)
            for measure in old_m:
                diff = float(
                    np.max(np.abs(new_m[measure] - old_m[measure]) / np.maximum(np.abs(old_m[measure]), 1e-12))
                )
                rows.append(
                    {
                        "transform": name,
                        "measure": measure,
                        "where": layer,
                        "kind": "neuron basis",
                        "before": float(np.mean(old_m[measure])),
                        "after": float(np.mean(new_m[measure])),
                        "max_relative_change": diff,
                        "changed": bool(diff > 1e-6),
                    }
                )
    free = [r for r in rows if r["kind"] == "coordinate-free"]
    return {
        "rows": rows,
        "output_relative_change": output_change,
        "sites": sites,
        "coordinate_free_kept": bool(free) and all(r["within_bound"] for r in free),
        "rank_changes_within_band": sum(r["changed"] for r in free),
        "neuron_basis_changed": sorted({r["measure"] for r in rows if r["kind"] == "neuron basis" and r["changed"]}),
    }
