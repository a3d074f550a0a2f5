"""Users' own models: a factory named by import path, and a weights file read without unpickling code.

A factory is ``package.module:function``; it is imported and called with keyword arguments, so it
runs the user's own code, by their explicit choice in params.yaml. Weights are read either from
safetensors (no code at all) or from a PyTorch state dict with ``torch.load(weights_only=True)``,
which refuses any pickle that would build something other than tensors and plain containers.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernelscope.core.errors import CheckpointError

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
        raise CheckpointError(
            f"{field}: module {module_name!r} cannot be imported ({error}); install it or add its folder to PYTHONPATH."
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CheckpointError(
                f"{field}: {module_name!r} has no attribute {attribute!r}; check the name after the colon."
            )
        target = getattr(target, part)
    if not callable(target):
        raise CheckpointError(
            f"{field}: {path!r} is not callable; point it at a function or class that returns an nn.Module."
        )
    return target


def build_from_factory(path: str, kwargs: Mapping[str, Any], field: str = "model.factory") -> nn.Module:
    factory = resolve_factory(path, field)
    try:
        model = factory(**dict(kwargs))
    except TypeError as error:
        raise CheckpointError(
            f"{field}: calling {path} with kwargs {dict(kwargs)} failed ({error}); fix model.kwargs."
        ) from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"{field}: {path} returned {type(model).__name__}, not a torch.nn.Module; return the model itself."
        )
    return model


def _first_foreign_global(path: Path) -> str | None:
    """The first global a pickle (plain, or torch.save's zip) imports outside what torch.load(weights_only=True) allows.

    Read with pickletools, which only decodes opcodes and never imports or calls anything.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        try:
            from torch._weights_only_unpickler import _get_allowed_globals  # private; only refines the answer

            allowed = set(_get_allowed_globals())
        except ImportError:
            allowed = set()
        strings: list[str] = []
        memo: dict[int, str] = {}
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name.endswith(("UNICODE", "STRING")) and isinstance(arg, str):
                strings.append(str(arg))
            elif opcode.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                memo[int(arg)] = strings[-1]
            elif opcode.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                strings.append(memo[int(arg)])
            elif opcode.name in ("GLOBAL", "STACK_GLOBAL"):
                module, name = str(arg).split(" ", 1) if opcode.name == "GLOBAL" else (strings[-2:] + ["?", "?"])[:2]
                full = f"{module}.{name}"
                if (full not in allowed) if allowed else module.split(".")[0] not in ("torch", "collections"):
                    return full
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile, IndexError):
        return None
    return None


def _unpickling_reason(message: str, path: Path) -> str:
    """What torch.load(weights_only=True) refused, from its message
    (the reason follows a paragraph of PyTorch advice).
    """
    found = re.search(
        r"GLOBAL (\S+?)\.?(?:\s|$)", message
    )  # "Unsupported global: GLOBAL x.y was not ..." or "... GLOBAL posix.system whose ..."
    if found:
        return f"it names the global {found.group(1)}"
    found = re.search(r"unrecognized function (.+?)(?:\n|$)", message)
    if found:
        return f"it calls {found.group(1).strip()}"
    found = re.search(r"Unsupported operand (\d+)", message)
    if (
        found
    ):  # the unpickler stopped before any global (e.g. at protocol 4's FRAME); read the names without running anything
        name = _first_foreign_global(path)
        return (
            f"it names the global {name}"
            if name
            else f"it uses pickle opcode {found.group(1)}, which torch.load(weights_only=True) does not read"
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    reasons = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines if not line.startswith(advice)]
    return (reasons or lines or ["unknown reason"])[0][:160]


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
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({str(error).splitlines()[0][:120]}); "
                "the file is truncated or not safetensors, export it again with safetensors.torch.save_file."
            ) from None
    if suffix in TORCH_SUFFIXES:
        try:
            with (
                warnings.catch_warnings()
            ):  # torch warns about any pickle protocol but 2 before refusing it: one sentence is enough
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{path}: refused, the pickle holds more than tensors ({_unpickling_reason(str(error), path)}); "
                "save a plain state dict (torch.save(model.state_dict(), ...)) or convert it to safetensors."
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path}: not a readable PyTorch file ({str(error).splitlines()[0][:120]}); the file is truncated or "
                "corrupt, save it again."
            ) from None
        if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
            loaded = loaded["state_dict"]  # a training checkpoint holding the state dict under its usual key
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointError(
                f"{path}: holds {type(loaded).__name__}, not a state dict of tensors; save model.state_dict()."
            )
        return dict(loaded)
    raise CheckpointError(
        f"{path}: unknown weights format {suffix!r}; use .safetensors, or a state dict saved as .pt/.pth."
    )


def state_dict_differences(model: nn.Module, weights: Mapping[str, torch.Tensor], limit: int = 10) -> list[str]:
    """Every missing name, unexpected name and shape mismatch between a model and a state dict."""
    expected = model.state_dict()
    out = [f"missing {name} {tuple(t.shape)}" for name, t in expected.items() if name not in weights]
    out += [f"unexpected {name} {tuple(t.shape)}" for name, t in weights.items() if name not in expected]
    out += [
        f"shape of {name}: model {tuple(expected[name].shape)}, file {tuple(t.shape)}"
        for name, t in weights.items()
        if name in expected and tuple(t.shape) != tuple(expected[name].shape)
    ]
    return out if len(out) <= limit else out[:limit] + [f"… and {len(out) - limit} more"]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file into the factory's model: names and shapes must match exactly, values must be finite."""
    weights = read_state_dict(path)
    differences = state_dict_differences(model, weights)
    if differences:
        raise CheckpointError(
            f"{path}: does not match the model's parameters ({'; '.join(differences)}); "
            "check model.factory and model.kwargs, or export the weights of this architecture."
        )
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(
            f"{path}: non-finite values (NaN or inf) in {', '.join(bad[:5])}; the weights are corrupt or training "
            "diverged, export a healthy checkpoint."
        )
    reference = model.state_dict()
    # float64 into a float32 model is a harmless cast; integers into a float tensor would load silently wrong values
    mismatched = [
        f"{name} (model {reference[name].dtype}, file {t.dtype})"
        for name, t in weights.items()
        if reference[name].is_floating_point() != t.is_floating_point()
    ]
    if mismatched:
        raise CheckpointError(
            f"{path}: dtype of {'; '.join(mismatched[:5])} does not match the model's (a floating tensor needs "
            "floating weights); export the weights from the trained float model itself."
        )
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in weights.items()})
    return model.eval()
