"""A fast forward pass for m stacked MLPs (Linear / ScaledLinear and ReLU in an nn.Sequential).

vmap over ``F.linear`` hands the weight gradient to a batched matmul with a transposed operand, which
on CPU takes a slow path plus a strided copy (about 15× the cost of the contiguous product for 100 ×
100 layers). This linear map does the same arithmetic with contiguous operands in its backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.models.zoo import ScaledLinear


class _StackedLinear(torch.autograd.Function):
    """y = x Wᵀ + b for m models at once: x (m, b, in), W (m, out, in), bias (m, out) -> (m, b, out)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight)  # (m, b, in)
        grad_w = torch.bmm(grad.transpose(1, 2).contiguous(), x)  # (m, out, in), operands contiguous
        return grad_x, grad_w, grad.sum(1)


def supports(base: nn.Module) -> bool:
    """True for an nn.Sequential of linear layers (with bias) and ReLUs: the registry MLP."""
    return isinstance(base, nn.Sequential) and all(
        (type(layer) in (nn.Linear, ScaledLinear) and layer.bias is not None) or type(layer) is nn.ReLU
        for layer in base
    )


def forward(base: nn.Sequential, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(m, b, in) inputs -> (m, b, C_out) logits of the m models whose stacked parameters are ``params``."""
    h = x
    for name, layer in base.named_children():
        if type(layer) is nn.ReLU:
            h = torch.relu(h)
            continue
        scale = getattr(layer, "scale", 1.0)
        h = _StackedLinear.apply(h * scale if scale != 1.0 else h, params[f"{name}.weight"], params[f"{name}.bias"])
    return h


class StackedSGD:
    """Minibatch SGD (momentum or not) of m stacked MLPs with the backward pass written out, no autograd.

    The same step as torch.optim.SGD on the mean loss of each model's minibatch, cross-entropy on C_out
    logits or binary cross-entropy on one: d loss / d logits = (softmax(z) − onehot(y)) / b, or
    (σ(z) − y) / b, then back through the layers. Without momentum the update is fused into the weight
    gradient's product (W ← W − lr·gᵀh in one baddbmm_), which with no graph to build is about twice
    the autograd step's speed on digits10 stacks (benchmarks/retrain_bench.py).
    ``params`` (the stacked tensors) are updated in place.
    """

    def __init__(self, base: nn.Sequential, params: dict[str, torch.Tensor], lr: float, momentum: float) -> None:
        linear = [(name, layer) for name, layer in base.named_children() if type(layer) is not nn.ReLU]
        self.weights = [params[f"{name}.weight"] for name, _ in linear]  # (m, out, in) each
        self.biases = [params[f"{name}.bias"] for name, _ in linear]  # (m, out)
        self.scales = [float(getattr(layer, "scale", 1.0)) for _, layer in linear]  # > 0: masks read off s·relu(a)
        self.lr, self.momentum = lr, momentum
        self.velocity = [torch.zeros_like(t) for t in self.weights + self.biases] if momentum else []

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, with_loss: bool = False) -> torch.Tensor | None:
        """x (m, b, in), y (m, b) -> one step of every model; with_loss: (m,) mean minibatch losses before it."""
        inputs = []  # the layers' scaled inputs s·h, (m, b, in) each
        h = x
        for i, (weight, bias, scale) in enumerate(zip(self.weights, self.biases, self.scales)):
            inputs.append(h * scale if scale != 1.0 else h)
            h = torch.baddbmm(bias.unsqueeze(1), inputs[-1], weight.transpose(1, 2))
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        losses = _mean_losses(h, y) if with_loss else None  # h: (m, b, C_out) logits
        grad = _logit_gradient(h, y)  # (m, b, C_out)
        for i in range(len(self.weights) - 1, -1, -1):
            below = None
            if i > 0:  # the gradient at the layer's input, through s and the ReLU below
                below = torch.bmm(grad, self.weights[i])
                below.mul_(inputs[i] > 0)
                if self.scales[i] != 1.0:
                    below.mul_(self.scales[i])
            self._update(i, grad, inputs[i])
            grad = below
        return losses

    def _update(self, i: int, grad: torch.Tensor, inputs: torch.Tensor) -> None:
        weight, bias = self.weights[i], self.biases[i]
        if not self.momentum:
            weight.baddbmm_(grad.transpose(1, 2), inputs, alpha=-self.lr)
            bias.sub_(grad.sum(1), alpha=self.lr)
            return
        # torch.optim.SGD: v ← μ·v + g (v starts at g: μ·0 + g), p ← p − lr·v
        v_weight, v_bias = self.velocity[i], self.velocity[len(self.weights) + i]
        v_weight.mul_(self.momentum).add_(torch.bmm(grad.transpose(1, 2), inputs))
        v_bias.mul_(self.momentum).add_(grad.sum(1))
        weight.sub_(v_weight, alpha=self.lr)
        bias.sub_(v_bias, alpha=self.lr)


def _logit_gradient(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(m, b, C_out) logits, (m, b) labels -> d(mean loss of each model)/d logits, (m, b, C_out)."""
    b = logits.shape[1]
    if logits.shape[2] == 1:
        return (torch.sigmoid(logits) - y.to(logits.dtype).unsqueeze(2)).div_(b)
    grad = torch.softmax(logits, dim=2)
    grad.scatter_add_(2, y.unsqueeze(2), torch.full((*y.shape, 1), -1.0, dtype=logits.dtype))
    return grad.div_(b)


def _mean_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(m, b, C_out) logits, (m, b) labels -> (m,) mean minibatch losses (the loss the step descends)."""
    if logits.shape[2] == 1:
        return F.binary_cross_entropy_with_logits(logits[..., 0], y.to(logits.dtype), reduction="none").mean(1)
    return (torch.logsumexp(logits, dim=2) - logits.gather(2, y.unsqueeze(2))[..., 0]).mean(1)
