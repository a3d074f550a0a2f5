"""How a kernel kind represents a chunk of inputs: the ``KernelSpec`` interface, fixed zero-padded micro-batches
(a sample's features never depend on the batch it arrives in), and the bytes a representation takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import torch

MICRO_BATCH = 64  # rows per featurization call; fixed so a sample's features never depend on its batch


@dataclass(frozen=True)
class KernelSpec:
    kind: str
    normalization: str  # "cosine" or "none"
    represent: Callable[[torch.Tensor], Any]  # (b, ...) inputs -> representation of b samples
    gram: Callable[[Any, Any], torch.Tensor]  # -> (n_q, n_t) float64
    diag: Callable[[Any], torch.Tensor]  # -> (n,) float64
    # Trace kernels over C classes: the representation of class c alone, (x (b, ...), c) -> rep, whose grams and
    # diags summed over the C classes are the kernel's. Lets a training side too large to hold for all classes
    # at once be held one class at a time (``class_major_blocks``).
    by_class: Callable[[torch.Tensor, int], Any] | None = None
    n_classes: int = 0
    # Estimated bytes that ``represent`` holds per sample while it works (every class), beyond what it returns:
    # x (b, ...) -> bytes a sample. None: negligible next to the representation.
    working_bytes: Callable[[torch.Tensor], int] | None = None


# -- representations are tensors, lists of factor dataclasses, or lists of tensors --
def map_tensors(rep: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(rep, torch.Tensor):
        return fn(rep)
    if isinstance(rep, list):
        return [map_tensors(r, fn) for r in rep]
    if is_dataclass(rep):
        return replace(
            rep,
            **{
                f.name: map_tensors(getattr(rep, f.name), fn)
                for f in fields(rep)
                if isinstance(getattr(rep, f.name), torch.Tensor)
            },
        )
    return rep


def cat_reps(reps: list[Any]) -> Any:
    first = reps[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(reps)
    if isinstance(first, list):
        return [cat_reps([r[i] for r in reps]) for i in range(len(first))]
    tensors = {
        f.name: torch.cat([getattr(r, f.name) for r in reps])
        for f in fields(first)
        if isinstance(getattr(first, f.name), torch.Tensor)
    }
    return replace(first, **tensors)


def nbytes(rep: Any) -> int:
    total = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    map_tensors(rep, count)
    return total


def represent(spec: KernelSpec, x: torch.Tensor, cls: int | None = None) -> Any:
    """Representation of a chunk (of class ``cls`` alone when given: ``spec.by_class``), computed in zero-padded
    micro-batches of MICRO_BATCH rows."""
    parts = []
    for start in range(0, len(x), MICRO_BATCH):
        piece = x[start : start + MICRO_BATCH]
        n = len(piece)
        if n < MICRO_BATCH:
            piece = torch.cat([piece, piece.new_zeros(MICRO_BATCH - n, *piece.shape[1:])])
        rep = spec.represent(piece) if cls is None else spec.by_class(piece, cls)
        parts.append(map_tensors(rep, lambda t, n=n: t[:n]))
    return cat_reps(parts)


def sample_bytes(spec: KernelSpec, x_train: torch.Tensor) -> tuple[int, int | None]:
    """Bytes of one training sample's representation: (every class, one class alone or None without ``by_class``).
    Measured on a batch of one sample, not a padded micro-batch: a micro-batch of a ResNet18-width network's exact
    trNTK factors, all ten classes, is 15.7 GB, and the plan must be chosen before anything that size is formed."""
    every = nbytes(spec.represent(x_train[:1]))
    return every, None if spec.by_class is None else nbytes(spec.by_class(x_train[:1], 0))
