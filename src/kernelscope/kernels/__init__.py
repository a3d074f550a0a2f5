"""Kernels between data points, in (query, train) orientation.

``compute_kernel(model, x_query, x_train=None, kind=...)`` returns a float64 array
(n_query, n_train); ``kernel_spec`` gives the block-wise recipe that the streaming writer uses.
The kinds are the entries of ``kernelscope.kernels.registry.KERNELS``; the built-in ones (MATH.md)
are in ``kernelscope.kernels.builtin``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels import builtin  # noqa: F401  (registers the built-in kinds)
from kernelscope.kernels.assembly import kernel_row_blocks
from kernelscope.kernels.registry import KERNELS, model_kinds, option_names
from kernelscope.kernels.representation import KernelSpec

METHODS = ("factored", "jacobian")


def kernel_spec(
    model: nn.Module, kind: str, *, method: str = "factored", memory_budget_mb: int = 2048, **options: Any
) -> KernelSpec:
    """The recipe of one kernel kind for this model, from its registry entry.

    ``options`` are the kind's, as ``kernel_options`` records them (the built-in ones: ``projection``,
    ``projection_dim``, ``seed`` for the projected kinds, ``layers`` for em); a kind ignores the others.
    ``method='jacobian'`` is the materializing reference of the exact kinds (the others ignore it).
    """
    entry = KERNELS.get(kind)
    if entry is None or entry.build is None:
        why = "unknown" if entry is None else f"written by the {entry.producer} stage, not computed from a model"
        raise KernelscopeError(f"kernel kind {kind!r} is {why}; choose one of {', '.join(model_kinds())}.")
    unknown = sorted(set(options) - option_names())
    if unknown:
        raise KernelscopeError(
            f"kernel option {unknown[0]!r} is not an option of any kernel kind; "
            f"choose from {', '.join(sorted(option_names()))}."
        )
    if method not in METHODS:
        raise KernelscopeError(f"method {method!r} is unknown; choose 'factored' or 'jacobian'.")
    return entry.build(model, options, memory_budget_mb, method)


def as_model_tensor(x: Any, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not tensor.is_floating_point():
        raise KernelscopeError(
            f"{name} has dtype {tensor.dtype}; pass floating-point inputs in the model's dtype ({dtype})."
        )
    if tensor.dtype != dtype:
        raise KernelscopeError(
            f"{name} has dtype {tensor.dtype} but the model's parameters are {dtype}; cast one to match."
        )
    return tensor.detach().to(device)


def compute_kernel(
    model: nn.Module,
    x_query: Any,
    x_train: Any = None,
    kind: str = "trntk",
    *,
    chunk_size: int = 256,
    memory_budget_mb: int = 2048,
    method: str = "factored",
    progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """Kernel between query and training points: a float64 array of shape (n_query, n_train).

    ``x_train=None`` means the train × train kernel of ``x_query`` with itself. Inputs are tensors
    or arrays in the model's float dtype (float32 or float64). The model is evaluated in eval
    mode and left in the mode it came in. ``options``: the kind's (see ``kernel_spec``), e.g.
    ``projection_dim=K, projection='kron_hadamard', seed=0`` or ``layers=[...]``.
    """
    param = next(model.parameters())
    xq = as_model_tensor(x_query, param.dtype, param.device, "x_query")
    xt = None if x_train is None else as_model_tensor(x_train, param.dtype, param.device, "x_train")
    spec = kernel_spec(model, kind, method=method, memory_budget_mb=memory_budget_mb, **options)
    was_training = model.training
    model.eval()
    try:
        out = np.empty((len(xq), len(xq) if xt is None else len(xt)), dtype=np.float64)
        for rows, block in kernel_row_blocks(
            spec, xq, xt, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb, progress=progress
        ):
            out[rows] = block
    finally:
        model.train(was_training)
    return out
