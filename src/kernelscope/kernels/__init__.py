"""Kernels between data points, in (query, train) orientation.

``compute_kernel(model, x_query, x_train=None, kind=...)`` returns a float64 array
(n_query, n_train); ``kernel_spec`` gives the block-wise recipe that the streaming writer uses.
Kinds (MATH.md): trntk, trntk0, pntk (exact, from layer factors); proj_trntk, proj_pntk
(random projections, option ``projection_dim`` K and ``seed``); ck (conjugate kernel); em
(embedding kernel over ``layers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels import embeddings, exact
from kernelscope.kernels.assembly import KernelSpec, kernel_row_blocks
from kernelscope.kernels.jacobians import jacobian_rows
from kernelscope.kernels.layers import layer_factors
from kernelscope.kernels.projection import PROJECTIONS, Projector

KERNEL_KINDS = ("trntk", "trntk0", "pntk", "proj_trntk", "proj_pntk", "ck", "em")
NORMALIZATION = {"trntk": "cosine", "trntk0": "none", "pntk": "none", "proj_trntk": "cosine", "proj_pntk": "cosine",
                 "ck": "cosine", "em": "cosine"}
DEFAULT_PROJECTION_DIM = 2048  # the paper uses 10240; see the README for the error at each K on this machine


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T).double()


def _sqnorm(a: torch.Tensor) -> torch.Tensor:
    return (a.double() ** 2).sum(1)


def kernel_spec(model: nn.Module, kind: str, *, projection_dim: int | None = None, projection: str = "kron_hadamard",
                seed: int = 0, layers: list[str] | None = None, method: str = "factored",
                memory_budget_mb: int = 2048) -> KernelSpec:
    """The recipe of one kernel kind for this model. ``method='jacobian'`` is the materializing reference."""
    if kind not in KERNEL_KINDS:
        raise KernelscopeError(f"kernel kind {kind!r} is unknown; choose one of {', '.join(KERNEL_KINDS)}.")
    norm = NORMALIZATION[kind]
    if kind in ("trntk", "trntk0", "pntk") and method == "jacobian":
        # Rows per Jacobian call sized so one call's (rows, C, P) block fits the memory budget.
        param = next(model.parameters())
        row_bytes = _n_outputs(model) * sum(p.numel() for p in model.parameters() if p.requires_grad) * param.element_size()
        rows = max(1, int(memory_budget_mb * 2**20 // max(row_bytes, 1)))

        def rep(x: torch.Tensor) -> torch.Tensor:
            parts = []
            for start in range(0, len(x), rows):
                j = jacobian_rows(model, x[start : start + rows])  # (b, C, P)
                parts.append(j.sum(1) / j.shape[1] ** 0.5 if kind == "pntk" else _flat(j))
            return torch.cat(parts)
        return KernelSpec(kind, norm, rep, _dot, _sqnorm)
    if method not in ("factored", "jacobian"):
        raise KernelscopeError(f"method {method!r} is unknown; choose 'factored' or 'jacobian'.")
    if kind in ("trntk", "trntk0"):
        return KernelSpec(kind, norm, lambda x: layer_factors(model, x)[0], exact.trace_gram, exact.trace_diag)
    if kind == "pntk":
        n_classes = _n_outputs(model)
        return KernelSpec(kind, norm, lambda x: layer_factors(model, x)[0],
                          lambda q, t: exact.pseudo_gram(q, t, n_classes), lambda q: exact.pseudo_diag(q, n_classes))
    if kind in ("proj_trntk", "proj_pntk"):
        if projection not in PROJECTIONS:
            raise KernelscopeError(f"projection {projection!r} is unknown; choose one of {', '.join(PROJECTIONS)}.")
        projector = Projector(projection_dim or DEFAULT_PROJECTION_DIM, seed, projection, memory_budget_mb)
        if kind == "proj_trntk":
            def rep(x: torch.Tensor) -> torch.Tensor:
                return _flat(projector.project(layer_factors(model, x)[0]))  # (b, C·K)
        else:
            def rep(x: torch.Tensor) -> torch.Tensor:
                return projector.project(layer_factors(model, x)[0]).sum(1)  # (b, K): P Σ_c g_c
        return KernelSpec(kind, norm, rep, _dot, _sqnorm)
    if kind == "ck":
        name = embeddings.last_linear(model)
        return KernelSpec(kind, norm, lambda x: embeddings.capture(model, x, [name], inputs=True)[0], _dot, _sqnorm)
    names = list(layers) if layers else embeddings.default_embedding_layers(model)
    embeddings.require_modules(model, names, field="kernel.em_layers")  # now, not at the first block: nothing is written yet
    return KernelSpec(kind, norm, lambda x: torch.cat(embeddings.capture(model, x, names), dim=1), _dot, _sqnorm)


def _n_outputs(model: nn.Module) -> int:
    return int(next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features)


def as_model_tensor(x: Any, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not tensor.is_floating_point():
        raise KernelscopeError(f"{name} has dtype {tensor.dtype}; pass floating-point inputs in the model's dtype ({dtype}).")
    if tensor.dtype != dtype:
        raise KernelscopeError(f"{name} has dtype {tensor.dtype} but the model's parameters are {dtype}; cast one to match.")
    return tensor.detach().to(device)


def compute_kernel(model: nn.Module, x_query: Any, x_train: Any = None, kind: str = "trntk", *, chunk_size: int = 256,
                   memory_budget_mb: int = 2048, projection_dim: int | None = None, projection: str = "kron_hadamard",
                   seed: int = 0, layers: list[str] | None = None, method: str = "factored", progress: bool = False) -> np.ndarray:
    """Kernel between query and training points: a float64 array of shape (n_query, n_train).

    ``x_train=None`` means the train × train kernel of ``x_query`` with itself. Inputs are tensors
    or arrays in the model's float dtype (float32 or float64). The model is evaluated in eval
    mode and left in the mode it came in.
    """
    param = next(model.parameters())
    xq = as_model_tensor(x_query, param.dtype, param.device, "x_query")
    xt = None if x_train is None else as_model_tensor(x_train, param.dtype, param.device, "x_train")
    spec = kernel_spec(model, kind, projection_dim=projection_dim, projection=projection, seed=seed, layers=layers,
                       method=method, memory_budget_mb=memory_budget_mb)
    was_training = model.training
    model.eval()
    try:
        out = np.empty((len(xq), len(xq) if xt is None else len(xt)), dtype=np.float64)
        for rows, block in kernel_row_blocks(spec, xq, xt, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb, progress=progress):
            out[rows] = block
    finally:
        model.train(was_training)
    return out
