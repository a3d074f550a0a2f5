"""Activation features for the conjugate kernel (CK) and the embedding kernel (Em)."""

from __future__ import annotations

import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.models.zoo import ScaledLinear

# Hidden-layer outputs are taken after the nonlinearity, as in the NTK-surrogate paper's App. K.3.
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Mish)


def last_linear(model: nn.Module) -> str:
    names = [name for name, m in model.named_modules() if type(m) in (nn.Linear, ScaledLinear)]
    if not names:
        raise KernelscopeError("the conjugate kernel needs a final nn.Linear layer, and this model has none.")
    return names[-1]


def default_embedding_layers(model: nn.Module) -> list[str]:
    """The output of every hidden layer: each activation module; else every Linear/Conv but the last."""
    names = [name for name, m in model.named_modules() if isinstance(m, ACTIVATIONS)]
    if names:
        return names
    maps = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    return maps[:-1] or maps


def require_modules(model: nn.Module, names: list[str], field: str = "layers") -> dict[str, nn.Module]:
    """The model's modules by name, after checking that every one of ``names`` is among them."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        choices = [n for n in modules if n]
        shown = ", ".join(choices[:20]) + (f" … ({len(choices)} in all)" if len(choices) > 20 else "")
        raise KernelscopeError(f"{field}: {missing} are not modules of the model; choose from {shown}.")
    return modules


def capture(model: nn.Module, x: torch.Tensor, names: list[str], inputs: bool = False) -> list[torch.Tensor]:
    """Flattened inputs (or outputs) of the named modules for a chunk x: list of (b, d_l)."""
    modules = require_modules(model, names)
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def grab(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen[name] = (args[0] if inputs else out).detach()

        return grab

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[n].reshape(x.shape[0], -1) for n in names]
