"""Per-sample gradients of the target output f(x) = log(p_y / (1 − p_y)), exact or projected.

With margin weights w_c = ∂f/∂z_c, ∇θ f = Σ_c w_c ∇θ z_c, so a projection of the per-class
Jacobians (kernelscope.kernels.projection, the kernels' own fast projection) contracted with w is
the projection of ∇θ f. The training loss is ℓ = −log p_y = log(1 + e^{−f}) for both heads, hence
∇θ ℓ = −(1 − p_y) ∇θ f: loss gradients need no second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from kernelscope.kernels.jacobians import jacobian_rows
from kernelscope.kernels.layers import layer_factors
from kernelscope.kernels.projection import Projector
from kernelscope.kernels.representation import MICRO_BATCH
from kernelscope.models.heads import correct_class_logit, is_binary


@dataclass(frozen=True)
class MarginGradients:
    """g (n, K) float64: P ∇θ f(x_i) (K = P, the parameter count, when exact); margin f (n,); p_y = σ(f) (n,)."""

    g: np.ndarray
    margin: np.ndarray

    @property
    def p_correct(self) -> np.ndarray:
        return expit(self.margin)

    @property
    def loss_scale(self) -> np.ndarray:
        """(n,) 1 − p_y: ∇ℓ = −(1 − p_y) ∇f."""
        return expit(-self.margin)


def margin_weights(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(b, C_out) logits, (b,) labels -> (b, C_out) ∂f/∂z_c of f = log(p_y / (1 − p_y)).

    One logit z: f = ±z, so w = +1 for y = 1, −1 for y = 0. Several: f = z_y − logsumexp_{c≠y} z_c,
    so w_y = 1 and w_c = −softmax over the other classes.
    """
    if is_binary(logits):
        return (2 * y.to(logits.dtype) - 1).unsqueeze(1)
    rows = torch.arange(len(y))
    others = logits.clone()
    others[rows, y] = -torch.inf
    w = -torch.softmax(others, dim=1)
    w[rows, y] = 1.0
    return w


def margin_gradients(
    model: nn.Module, x: np.ndarray, y: np.ndarray, projector: Projector | None = None
) -> MarginGradients:
    """Per-sample P ∇θ f for every row of x, in fixed micro-batches (a sample's features do not depend on its batch).

    ``projector`` None: exact gradients (K = every trainable parameter), for small models and references.
    """
    model.eval()
    dtype = next(model.parameters()).dtype
    xt, yt = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=torch.int64)
    blocks, margins = [], []
    for start in range(0, len(xt), MICRO_BATCH):
        xb, yb = xt[start : start + MICRO_BATCH], yt[start : start + MICRO_BATCH]
        if projector is None:
            per_class = jacobian_rows(model, xb)  # (b, C, P)
            with torch.no_grad():
                logits = model(xb)
            g = torch.einsum("bck,bc->bk", per_class, margin_weights(logits, yb))
        else:  # one backward pass of the margin itself, Σ_c w_c F_c, then its projection: (b, K)
            factors, logits = layer_factors(model, xb, weights=lambda z, yb=yb: margin_weights(z, yb))
            g = projector.project(factors)[:, 0]
        blocks.append(g.detach().double().numpy())
        margins.append(correct_class_logit(logits.detach().double().numpy(), yb.numpy()))
    return MarginGradients(np.concatenate(blocks), np.concatenate(margins))
