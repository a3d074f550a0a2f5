"""Per-sample, per-output Jacobians of a model's logits with respect to its parameters."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap


def jacobian_rows(model: nn.Module, x: torch.Tensor, names: set[str] | None = None) -> torch.Tensor:
    """Jacobians g_c(x_i) = dF_c(x_i)/dθ for a chunk: (b, C, P).

    θ is every trainable parameter, or only those in ``names``. The model must already be in
    eval mode (kernels describe the deployed function).
    """
    wanted = {n for n, p in model.named_parameters() if p.requires_grad} if names is None else set(names)
    params = {name: p.detach() for name, p in model.named_parameters() if name in wanted}
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in wanted}
    buffers = dict(model.named_buffers())

    def logits_of_one(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),)).squeeze(0)  # (C,)

    per_param = vmap(jacrev(logits_of_one), in_dims=(None, 0))(params, x)  # name -> (b, C, *shape)
    b = x.shape[0]
    return torch.cat([j.reshape(b, j.shape[1], -1) for j in per_param.values()], dim=2)  # (b, C, P)
