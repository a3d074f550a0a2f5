"""Per-sample, per-output Jacobians of a model's logits with respect to its parameters."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def output_count(model: nn.Module, x_example: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x_example[:1]).shape[1])


def jacobian_rows(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Jacobians g_c(x_i) = dF_c(x_i)/dθ for a chunk: (b, C, P), P = trainable parameters.

    The model must already be in eval mode (kernels describe the deployed function).
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def logits_of_one(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),)).squeeze(0)  # (C,)

    per_param = vmap(jacrev(logits_of_one), in_dims=(None, 0))(params, x)  # name -> (b, C, *shape)
    b = x.shape[0]
    return torch.cat([j.reshape(b, j.shape[1], -1) for j in per_param.values()], dim=2)  # (b, C, P)
