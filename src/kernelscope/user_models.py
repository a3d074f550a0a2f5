"""Users' own models: a factory named by import path, and a weights file read without unpickling code.

A factory is ``package.module:function``; it is imported and called with keyword arguments, so it
runs the user's own code, by their explicit choice in params.yaml. Weights are read either from
safetensors (no code at all) or from a PyTorch state dict with ``torch.load(weights_only=True)``,
which refuses any pickle that would build something other than tensors and plain containers.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernelscope.errors import CheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def resolve_factory(path: str, field: str = "model.factory") -> Callable[..., nn.Module]:
    """The callable named by 'package.module:function' (dots after the colon reach nested attributes)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise CheckpointError(f"{field} is {path!r}; write it as 'package.module:function'.")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise CheckpointError(f"{field}: module {module_name!r} cannot be imported ({error}); install it or add its folder to PYTHONPATH.") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CheckpointError(f"{field}: {module_name!r} has no attribute {attribute!r}; check the name after the colon.")
        target = getattr(target, part)
    if not callable(target):
        raise CheckpointError(f"{field}: {path!r} is not callable; point it at a function or class that returns an nn.Module.")
    return target


def build_from_factory(path: str, kwargs: Mapping[str, Any], field: str = "model.factory") -> nn.Module:
    factory = resolve_factory(path, field)
    try:
        model = factory(**dict(kwargs))
    except TypeError as error:
        raise CheckpointError(f"{field}: calling {path} with kwargs {dict(kwargs)} failed ({error}); fix model.kwargs.") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{field}: {path} returned {type(model).__name__}, not a torch.nn.Module; return the model itself.")
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors file or a torch state dict (weights_only=True); never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; fix model.weights.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]}); the file is truncated or "
                                  "not safetensors, export it again with safetensors.torch.save_file.") from None
    if suffix in TORCH_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(f"{path}: refused, the pickle holds more than tensors ({str(error).splitlines()[0][:160]}); save a plain "
                                  "state dict (torch.save(model.state_dict(), ...)) or convert it to safetensors.") from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({str(error).splitlines()[0][:120]}); the file is truncated or "
                                  "corrupt, save it again.") from None
        if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
            loaded = loaded["state_dict"]  # a training checkpoint holding the state dict under its usual key
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors; save model.state_dict().")
        return dict(loaded)
    raise CheckpointError(f"{path}: unknown weights format {suffix!r}; use .safetensors, or a state dict saved as .pt/.pth.")


def state_dict_differences(model: nn.Module, weights: Mapping[str, torch.Tensor], limit: int = 10) -> list[str]:
    """Every missing name, unexpected name and shape mismatch between a model and a state dict."""
    expected = model.state_dict()
    out = [f"missing {name} {tuple(t.shape)}" for name, t in expected.items() if name not in weights]
    out += [f"unexpected {name} {tuple(t.shape)}" for name, t in weights.items() if name not in expected]
    out += [f"shape of {name}: model {tuple(expected[name].shape)}, file {tuple(t.shape)}"
            for name, t in weights.items() if name in expected and tuple(t.shape) != tuple(expected[name].shape)]
    return out if len(out) <= limit else out[:limit] + [f"… and {len(out) - limit} more"]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file into the factory's model: names and shapes must match exactly, values must be finite."""
    weights = read_state_dict(path)
    differences = state_dict_differences(model, weights)
    if differences:
        raise CheckpointError(f"{path}: does not match the model's parameters ({'; '.join(differences)}); "
                              "check model.factory and model.kwargs, or export the weights of this architecture.")
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN or inf) in {', '.join(bad[:5])}; the weights are corrupt or training "
                              "diverged, export a healthy checkpoint.")
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in weights.items()})
    return model.eval()

