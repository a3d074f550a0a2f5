"""The kernel kinds a run can name, one entry each: a new kind is one ``register_kernel`` call.

An entry says how the kind's values are normalized, which params shape it (recorded in every file of
the kind and required on every read), how to build its block-wise recipe from a model, and which stage
writes it. Params, provenance, the run layout, the kernel stage, the flows' cache keys and the kernel
comparison all read these entries, so none of them keeps its own list of kinds. The built-in kinds are
registered by ``kernelscope.kernels.builtin`` when the package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels.representation import KernelSpec

# (model, options, memory_budget_mb, method) -> the kind's recipe; options as kernel_options records them.
# The recipe's representations must carry no autograd graph (detach them, or compute them under torch.no_grad).
Builder = Callable[[nn.Module, dict[str, Any], int, str], KernelSpec]
NORMALIZATIONS = ("cosine", "none", "correlation")
PRODUCERS = ("kernel", "loss_kernel")  # the stages that write kernel files (see kernel_dir)
# params.kernel keys recorded (and handed to the builder) under another name; kept so existing files still verify.
OPTION_NAMES = {"em_layers": "layers"}


@dataclass(frozen=True)
class KernelKind:
    """One kernel kind. Once registered, e.g. ``register_kernel(KernelKind("logit_cos", "cosine", build))``, params
    accept it (kernel.kinds, table.kind, poison.kinds), the kernel stage computes it and the kGLM stages read it."""

    name: str
    normalization: str  # one of NORMALIZATIONS: how the stored values are scaled
    build: Builder | None  # None: another stage writes the kind (see producer), it is not computed from a model here
    options: tuple[str, ...] = ()  # keys of params.kernel the kind reads (beyond chunk_size and memory_budget_mb)
    sections: tuple[tuple[str, str], ...] = ()  # (recorded name, params section) pairs it reads whole
    seeded: bool = False  # draws random numbers from params.seed (recorded as 'seed')
    exact: str | None = None  # the exact kind this one approximates (the comparison stage plots the residuals)
    producer: str = "kernel"  # the stage that writes it: 'kernel' (kernels/<kind>/) or 'loss_kernel'
    # ('loss_kernel' kinds live under loss_kernel/kernels/<kind>/, with their SGLD run: see RunLayout.kernel_dir)


KERNELS: dict[str, KernelKind] = {}


def register_kernel(entry: KernelKind) -> KernelKind:
    """Add a kind to the registry; a name that is taken is refused (remove it from KERNELS first to replace it)."""
    if entry.name in KERNELS:
        raise KernelscopeError(f"kernel kind {entry.name!r} is already registered; give the new kind another name.")
    if entry.normalization not in NORMALIZATIONS:
        raise KernelscopeError(
            f"kernel kind {entry.name!r}: normalization {entry.normalization!r} is unknown; "
            f"choose one of {', '.join(NORMALIZATIONS)}."
        )
    if entry.producer not in PRODUCERS:
        raise KernelscopeError(
            f"kernel kind {entry.name!r}: producer {entry.producer!r} is unknown; choose one of {', '.join(PRODUCERS)}."
        )
    if (entry.build is None) == (entry.producer == "kernel"):
        raise KernelscopeError(
            f"kernel kind {entry.name!r}: a kind of the kernel stage needs a builder, and a kind "
            "another stage writes has none."
        )
    if entry.exact is not None and entry.exact not in KERNELS:
        raise KernelscopeError(
            f"kernel kind {entry.name!r}: its exact counterpart {entry.exact!r} is not registered; register it first."
        )
    KERNELS[entry.name] = entry
    return entry


def kernel_kind(name: str) -> KernelKind:
    """The registered entry of a kind, or a clear error naming the registered ones."""
    try:
        return KERNELS[name]
    except KeyError:
        raise KernelscopeError(f"kernel kind {name!r} is unknown; choose one of {', '.join(KERNELS)}.") from None


def option_names() -> set[str]:
    """Every option name some registered kind records (what ``kernel_spec`` accepts)."""
    names = {OPTION_NAMES.get(key, key) for entry in KERNELS.values() for key in entry.options}
    names |= {name for entry in KERNELS.values() for name, _ in entry.sections}
    return names | ({"seed"} if any(entry.seeded for entry in KERNELS.values()) else set())


def model_kinds() -> tuple[str, ...]:
    """The kinds the kernel stage computes from a model (those params may name), in registration order."""
    return tuple(name for name, entry in KERNELS.items() if entry.build is not None)


def kinds_written_by(producer: str) -> tuple[str, ...]:
    """The kinds one stage writes ('kernel' or 'loss_kernel'), in registration order."""
    return tuple(name for name, entry in KERNELS.items() if entry.producer == producer)
