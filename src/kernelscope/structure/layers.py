"""Layers of a model as functions of each other: activations, layer-to-layer maps and their Jacobians."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels.embeddings import ACTIVATIONS, capture

INPUT, OUTPUT = "input", "output"


def default_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """A model's own ``structure_layers`` if it declares them; else the input (when it is real-valued),
    every activation module's output, and the logits."""
    declared = getattr(model, "structure_layers", None)
    if declared:
        return list(declared)
    hidden = [name for name, m in model.named_modules() if isinstance(m, ACTIVATIONS)]
    return ([INPUT] if x.is_floating_point() else []) + hidden + [OUTPUT]


def check_layers(model: nn.Module, x: torch.Tensor, layers: list[str], source: str = "structure.layers") -> None:
    """Refuse unknown names, too few layers, or a differentiable map from integer inputs."""
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in (INPUT, OUTPUT) and n not in modules]
    if unknown:
        raise KernelscopeError(
            f"{source}: layer names {unknown} are not modules of the model; "
            f"choose from {['input', 'output', *[n for n in modules if n]]}."
        )
    if len(layers) < 2:
        raise KernelscopeError(f"{source}: needs at least two layers (got {layers}); list them in forward order.")
    if INPUT in layers and not x.is_floating_point():
        raise KernelscopeError(
            f"{source}: 'input' is not differentiable for this model (integer inputs); start at an embedding module."
        )


class _Stop(Exception):
    """Raised by a hook once the target layer is computed, so the rest of the forward pass is skipped."""


def activations(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Flattened outputs of the named layers for a chunk x: name -> (b, d); 'input' and 'output' included."""
    modules = [n for n in names if n not in (INPUT, OUTPUT)]
    seen = dict(zip(modules, capture(model, x, modules))) if modules else {}
    if OUTPUT in names:
        with torch.no_grad():
            seen[OUTPUT] = model(x).reshape(x.shape[0], -1)
    if INPUT in names:
        seen[INPUT] = x.reshape(x.shape[0], -1)
    return {n: seen[n] for n in names}


def run_with(
    model: nn.Module,
    x: torch.Tensor,
    source: str,
    replace: Callable[[torch.Tensor], torch.Tensor],
    target: str = OUTPUT,
) -> torch.Tensor:
    """The target layer (b, d_t) when the source layer's output h (b, d_s) is replaced by ``replace(h)``."""
    modules = dict(model.named_modules())
    handles = []
    captured: dict[str, torch.Tensor] = {}
    if source == INPUT:
        x = replace(x.reshape(x.shape[0], -1)).reshape(x.shape)
    else:
        handles.append(
            modules[source].register_forward_hook(lambda m, a, o: replace(o.reshape(o.shape[0], -1)).reshape(o.shape))
        )
    if target != OUTPUT:

        def stop(m: nn.Module, a: tuple, o: torch.Tensor) -> None:
            captured["t"] = o
            raise _Stop

        handles.append(modules[target].register_forward_hook(stop))
    try:
        out = model(x)
    except _Stop:
        out = captured["t"]
    finally:
        for h in handles:
            h.remove()
    return out.reshape(out.shape[0], -1)


def jacobians(
    model: nn.Module, x: torch.Tensor, source: str, target: str, readout: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-point Jacobians ∂(readout · h_target)/∂h_source for a chunk x: (b, d_t or r, d_s).

    Points are independent (eval mode), so the Jacobian of the batch-summed map has no cross terms:
    jacrev of Σ_b f(h)_b gives every point's Jacobian in one vectorized pass.
    """
    h = activations(model, x, [source])[source]  # (b, d_s)

    def summed(h_source: torch.Tensor) -> torch.Tensor:
        out = run_with(model, x, source, lambda _: h_source, target)  # (b, d_t)
        if readout is not None:
            out = out @ readout.T  # (b, r)
        return out.sum(0)

    jac = torch.func.jacrev(summed)(h)  # (d_t, b, d_s)
    return jac.permute(1, 0, 2).detach().contiguous()


def chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, x.shape[0], size):
        yield x[start : start + size]
