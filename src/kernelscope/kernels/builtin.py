"""The built-in kernel kinds (MATH.md), registered on import.

trntk, trntk0, pntk: exact, from layer factors (``method='jacobian'``: the materializing reference);
proj_trntk, proj_pntk: random projections (options ``projection``, ``projection_dim`` K and ``seed``);
ck: the conjugate kernel; em: the embedding kernel over ``layers``; loss_cov, loss_corr: the loss
kernels, written by the loss-kernel stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels import embeddings, exact
from kernelscope.kernels.jacobians import jacobian_rows
from kernelscope.kernels.layers import factor_working_bytes, layer_factors
from kernelscope.kernels.projection import PROJECTIONS, Projector
from kernelscope.kernels.registry import KernelKind, register_kernel
from kernelscope.kernels.representation import KernelSpec

DEFAULT_PROJECTION_DIM = 2048  # the paper uses 10240; see the README for the error at each K on this machine


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T).double()


def sqnorm(a: torch.Tensor) -> torch.Tensor:
    return (a.double() ** 2).sum(1)


def n_outputs(model: nn.Module) -> int:
    return int(next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features)


def _jacobian_reference(model: nn.Module, kind: str, norm: str, memory_budget_mb: int) -> KernelSpec:
    """The exact kinds from materialized Jacobians (the slow reference of the factored path)."""
    # Rows per Jacobian call sized so one call's (rows, C, P) block fits the memory budget.
    param = next(model.parameters())
    row_bytes = n_outputs(model) * sum(p.numel() for p in model.parameters() if p.requires_grad) * param.element_size()
    rows = max(1, int(memory_budget_mb * 2**20 // max(row_bytes, 1)))

    def rep(x: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, len(x), rows):
            j = jacobian_rows(model, x[start : start + rows])  # (b, C, P)
            parts.append(j.sum(1) / j.shape[1] ** 0.5 if kind == "pntk" else flat(j))
        return torch.cat(parts)

    return KernelSpec(kind, norm, rep, dot, sqnorm)


def _trace_ntk(kind: str, norm: str) -> Any:
    def build(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
        if method == "jacobian":
            return _jacobian_reference(model, kind, norm, memory_budget_mb)

        def by_class(x: torch.Tensor, c: int) -> list:
            return exact.compact(layer_factors(model, x, weights=lambda logits: one_hot_outputs(logits, c))[0])

        return KernelSpec(
            kind,
            norm,
            lambda x: exact.compact(layer_factors(model, x)[0]),
            exact.trace_gram,
            exact.trace_diag,
            by_class=by_class,
            n_classes=n_outputs(model),
            working_bytes=lambda x: factor_working_bytes(model, x, n_outputs(model)),
        )

    return build


def one_hot_outputs(logits: torch.Tensor, c: int) -> torch.Tensor:
    """Weights (b, C) selecting class c: the factors of F_c alone (one class of a trace kernel)."""
    weights = torch.zeros_like(logits)
    weights[:, c] = 1
    return weights


def summed_outputs(logits: torch.Tensor) -> torch.Tensor:
    """Weights (b, C) of ones: the factors of Σ_c F_c, the pNTK's output."""
    return torch.ones_like(logits)


def _pntk(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
    if method == "jacobian":
        return _jacobian_reference(model, "pntk", "none", memory_budget_mb)
    scale = 1.0 / n_outputs(model)  # (1/C) ⟨∇ Σ_c F_c, ∇' Σ_c F_c⟩
    return KernelSpec(
        "pntk",
        "none",
        lambda x: exact.compact(layer_factors(model, x, weights=summed_outputs)[0]),
        lambda q, t: exact.trace_gram(q, t) * scale,
        lambda q: exact.trace_diag(q) * scale,
    )


def _projector(options: dict[str, Any], memory_budget_mb: int) -> Projector:
    projection = options.get("projection", "kron_hadamard")
    if projection not in PROJECTIONS:
        raise KernelscopeError(f"projection {projection!r} is unknown; choose one of {', '.join(PROJECTIONS)}.")
    k = options.get("projection_dim") or DEFAULT_PROJECTION_DIM
    return Projector(k, options.get("seed", 0), projection, memory_budget_mb)


def _proj_trntk(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
    projector = _projector(options, memory_budget_mb)

    def rep(x: torch.Tensor) -> torch.Tensor:
        return flat(projector.project(layer_factors(model, x)[0]))  # (b, C·K)

    def by_class(x: torch.Tensor, c: int) -> torch.Tensor:  # (b, K): class c's block of rep, P g_c
        return projector.project(layer_factors(model, x, weights=lambda logits: one_hot_outputs(logits, c))[0])[:, 0]

    n_classes = n_outputs(model)
    return KernelSpec(
        "proj_trntk",
        "cosine",
        rep,
        dot,
        sqnorm,
        by_class=by_class,
        n_classes=n_classes,
        working_bytes=lambda x: factor_working_bytes(model, x, n_classes),
    )


def _proj_pntk(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
    projector = _projector(options, memory_budget_mb)

    def rep(x: torch.Tensor) -> torch.Tensor:
        return projector.project(layer_factors(model, x, weights=summed_outputs)[0])[:, 0]  # (b, K): P Σ_c g_c

    return KernelSpec("proj_pntk", "cosine", rep, dot, sqnorm)


def _ck(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
    name = embeddings.last_linear(model)
    return KernelSpec("ck", "cosine", lambda x: embeddings.capture(model, x, [name], inputs=True)[0], dot, sqnorm)


def _em(model: nn.Module, options: dict[str, Any], memory_budget_mb: int, method: str) -> KernelSpec:
    layers = options.get("layers")
    names = list(layers) if layers else embeddings.default_embedding_layers(model)
    # Checked now, not at the first block: nothing is written yet.
    embeddings.require_modules(model, names, field="kernel.em_layers")
    return KernelSpec("em", "cosine", lambda x: torch.cat(embeddings.capture(model, x, names), dim=1), dot, sqnorm)


PROJECTED = ("projection", "projection_dim")
SGLD = (("sgld", "loss_kernel"),)  # the loss_kernel section, recorded as 'sgld'
for _entry in (
    KernelKind("trntk", "cosine", _trace_ntk("trntk", "cosine")),
    KernelKind("trntk0", "none", _trace_ntk("trntk0", "none")),
    KernelKind("pntk", "none", _pntk),
    KernelKind("proj_trntk", "cosine", _proj_trntk, options=PROJECTED, seeded=True, exact="trntk"),
    KernelKind("proj_pntk", "cosine", _proj_pntk, options=PROJECTED, seeded=True, exact="pntk"),
    KernelKind("ck", "cosine", _ck),
    KernelKind("em", "cosine", _em, options=("em_layers",)),
    # The loss kernels live with their SGLD run and record its settings.
    KernelKind("loss_cov", "none", None, sections=SGLD, seeded=True, producer="loss_kernel"),
    KernelKind("loss_corr", "correlation", None, sections=SGLD, seeded=True, producer="loss_kernel"),
):
    register_kernel(_entry)
