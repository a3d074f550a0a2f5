"""Kernels between data points, in (query, train) orientation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.errors import KernelscopeError
from kernelscope.kernels.ntk import cosine_normalize, trace_ntk0

KERNEL_KINDS = ("trntk", "trntk0")
NORMALIZATION = {"trntk": "cosine", "trntk0": "none"}


def _as_model_tensor(x: Any, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not tensor.is_floating_point():
        raise KernelscopeError(f"{name} has dtype {tensor.dtype}; pass floating-point inputs in the model's dtype ({dtype}).")
    if tensor.dtype != dtype:
        raise KernelscopeError(f"{name} has dtype {tensor.dtype} but the model's parameters are {dtype}; cast one to match.")
    return tensor.detach()


def compute_kernel(model: nn.Module, x_query: Any, x_train: Any = None, kind: str = "trntk", *,
                   chunk_size: int = 128, memory_budget_mb: int = 2048, progress: bool = False) -> np.ndarray:
    """Kernel between query and training points: a float64 array of shape (n_query, n_train).

    ``x_train=None`` means the train × train kernel of ``x_query`` with itself. Inputs are tensors
    or arrays in the model's float dtype (float32 or float64). The model is evaluated in eval mode
    and left in the mode it came in.
    """
    if kind not in KERNEL_KINDS:
        raise KernelscopeError(f"kernel kind {kind!r} is unknown; choose one of {', '.join(KERNEL_KINDS)}.")
    dtype = next(model.parameters()).dtype
    xq = _as_model_tensor(x_query, dtype, "x_query")
    xt = None if x_train is None else _as_model_tensor(x_train, dtype, "x_train")
    was_training = model.training
    model.eval()
    try:
        k0, diag_q, diag_t = trace_ntk0(model, xq, xt, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb, progress=progress)
    finally:
        model.train(was_training)
    if kind == "trntk0":
        return k0
    return cosine_normalize(k0, diag_q, diag_t)
