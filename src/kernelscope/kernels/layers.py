"""Per-layer factors of per-sample, per-class gradients, found with forward hooks.

For a layer whose weight acts on an input a (one vector per position t) and produces y,
∂F_c/∂W = Σ_t δ_{c,t} a_tᵀ with δ_{c,t} = ∂F_c/∂y_t. Keeping (a, δ) instead of the gradient
lets kernels and projections work without materializing per-sample Jacobians (MATH.md).

Supported exactly: ``nn.Linear`` (and kernelscope's ``ScaledLinear``), ``nn.Conv2d`` (groups = 1,
zero padding), and affine BatchNorm. Parameters of any other module are handled by a generic
fallback that materializes their (small) per-sample Jacobians with ``torch.func``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.kernels.embeddings import capture
from kernelscope.kernels.jacobians import jacobian_rows
from kernelscope.models.zoo import ScaledLinear

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Outer:
    """Gradient of a weight-sharing-free or shared linear map: g_c = Σ_t delta[:, c, t] ⊗ act[:, t].

    act: (b, T, d_in) — bias handled by a trailing column of ones; delta: (b, C, T, d_out).
    """

    name: str
    act: torch.Tensor
    delta: torch.Tensor

    @property
    def shared(self) -> bool:
        return self.act.shape[1] > 1

    def materialize(self) -> torch.Tensor:
        """Per-sample, per-class gradient of this layer: (b, C, d_out · d_in)."""
        g = torch.einsum("bcto,bti->bcoi", self.delta, self.act)
        return g.reshape(g.shape[0], g.shape[1], -1)


@dataclass(frozen=True)
class Dense:
    """Per-sample, per-class gradient held explicitly: grad (b, C, p) (small layers, fallback)."""

    name: str
    grad: torch.Tensor


Factor = Outer | Dense


def _is_linear(module: nn.Module) -> bool:
    return type(module) in (nn.Linear, ScaledLinear)


def _is_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, _BATCHNORMS) and module.affine


def supported_modules(model: nn.Module, exclude: frozenset[str] = frozenset()) -> dict[str, nn.Module]:
    """Leaf modules whose trainable parameters are handled by factors rather than the fallback."""
    found = {}
    for name, module in model.named_modules():
        if name in exclude:
            continue
        params = [p for p in module.parameters(recurse=False)]
        if not params or not all(p.requires_grad for p in params):
            continue
        if _is_linear(module) or _is_conv(module) or _is_batchnorm(module):
            found[name] = module
    return found


def fallback_parameters(model: nn.Module, exclude: frozenset[str] = frozenset()) -> list[str]:
    covered = {
        f"{m}.{p}" if m else p
        for m, module in supported_modules(model, exclude).items()
        for p, _ in module.named_parameters(recurse=False)
    }
    return [name for name, p in model.named_parameters() if p.requires_grad and name not in covered]


def _with_bias_column(a: torch.Tensor, has_bias: bool) -> torch.Tensor:
    if not has_bias:
        return a
    return torch.cat([a, torch.ones(*a.shape[:-1], 1, dtype=a.dtype, device=a.device)], dim=-1)


def _conv_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(b, in, H, W) -> (b, T, in·kh·kw) patches in the layout of weight.view(out, -1)."""
    u = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
    return u.transpose(1, 2)


# Bytes held while one sample's factors are formed, per byte of its layer outputs per output direction: the
# δ of every layer and direction (kept per direction, then stacked), the BN and convolution products built from
# them, autograd's buffers. Measured on a ResNet18-width network (widths 64-512, two blocks a stage, 32×32
# inputs): 15.5 GB peak for 64 samples × 10 classes of 4.7 MB of layer outputs each, about 5 times the δ alone.
WORKING_SET_PER_OUTPUT_BYTE = 5


def factor_working_bytes(model: nn.Module, x: torch.Tensor, n_out: int, exclude: frozenset[str] = frozenset()) -> int:
    """Estimated bytes ``layer_factors`` holds at its peak per sample of x with ``n_out`` output directions (C for
    every class, 1 for a weighted sum): from the sizes of the supported modules' outputs on x (one forward pass,
    no gradients)."""
    outputs = capture(model, x, list(supported_modules(model, exclude)))  # (b, d_l) per module
    return WORKING_SET_PER_OUTPUT_BYTE * n_out * sum(o.numel() * o.element_size() for o in outputs) // max(len(x), 1)


def layer_factors(
    model: nn.Module,
    x: torch.Tensor,
    exclude: frozenset[str] = frozenset(),
    weights: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[Factor], torch.Tensor]:
    """Factors of every trainable parameter for a chunk x, and the logits (b, C).

    The model must be in eval mode, where samples do not interact, so one backward pass per
    class gives every sample's δ at once. A module called more than once per forward pass
    (shared weights) goes to the fallback.

    ``weights``: logits (b, C) -> w (b, C), treated as constants: the factors of the one combined output
    Σ_c w_c F_c per sample (class axis of length 1), in a single backward pass instead of C (pNTK: w = 1; a TRAK
    margin: its softmax weights).
    """
    modules = supported_modules(model, exclude)
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    reused: set[str] = set()

    def hook(name: str):
        def capture(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if name in inputs:
                reused.add(name)
            inputs[name] = args[0].detach()
            outputs[name] = out

        return capture

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.enable_grad():
            logits = model(x)  # (b, C)
            if reused:
                for handle in handles:
                    handle.remove()
                return layer_factors(model, x, exclude | frozenset(reused), weights)
            names = list(modules)
            ys = [outputs[n] for n in names]
            if weights is None:
                targets = [logits[:, c].sum() for c in range(logits.shape[1])]
            else:
                targets = [(logits * weights(logits.detach()).detach()).sum()]
            n_out = len(targets)
            deltas: list[list[torch.Tensor]] = [[] for _ in names]
            for c, target in enumerate(targets):
                grads = torch.autograd.grad(target, ys, retain_graph=c < n_out - 1, allow_unused=True)
                for slot, (g, y) in enumerate(zip(grads, ys)):
                    deltas[slot].append(torch.zeros_like(y) if g is None else g)
    finally:
        for handle in handles:
            handle.remove()

    b = x.shape[0]
    factors: list[Factor] = []
    for slot, name in enumerate(names):
        module = modules[name]
        a, d = inputs[name], torch.stack(deltas[slot], dim=1).detach()  # d: (b, C, *y.shape[1:])
        if _is_linear(module):
            a = a * module.scale if isinstance(module, ScaledLinear) else a
            a = a.reshape(b, -1, a.shape[-1])  # (b, T, d_in); T > 1 for sequence inputs
            factors.append(
                Outer(name, _with_bias_column(a, module.bias is not None), d.reshape(b, n_out, a.shape[1], -1))
            )
        elif _is_conv(module):
            patches = _with_bias_column(_conv_patches(module, a), module.bias is not None)  # (b, T, in·k [+1])
            delta = d.reshape(b, n_out, d.shape[2], -1).transpose(2, 3)  # (b, C, T, out)
            factors.append(Outer(name, patches, delta))
        else:  # affine batch norm in eval mode: y = γ x̂ + β per channel
            x_hat = (a - _bn_shape(module.running_mean, a)) / torch.sqrt(_bn_shape(module.running_var, a) + module.eps)
            reduce_dims = tuple(range(3, d.dim()))
            d_gamma = (d * x_hat.unsqueeze(1)).sum(reduce_dims) if reduce_dims else d * x_hat.unsqueeze(1)
            d_beta = d.sum(reduce_dims) if reduce_dims else d
            factors.append(Dense(name, torch.cat([d_gamma, d_beta], dim=2)))
    leftover = fallback_parameters(model, exclude)
    if leftover:
        jac = jacobian_rows(model, x, set(leftover))  # (b, C, p) of those parameters only
        if weights is not None:
            jac = torch.einsum("bcp,bc->bp", jac, weights(logits.detach())).unsqueeze(1)  # (b, 1, p)
        factors.append(Dense("fallback", jac))
    return factors, logits.detach()


def _bn_shape(stat: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return stat.reshape(1, -1, *([1] * (a.dim() - 2)))
