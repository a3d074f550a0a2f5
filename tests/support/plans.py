"""Memory budgets that make the kernel assembly take a given plan (kernelscope.kernels.assembly.plan_assembly)."""

import torch

from kernelscope.kernels.representation import MICRO_BATCH, KernelSpec, nbytes, represent


def class_major_mb(spec: KernelSpec, xt: torch.Tensor, n_query: int) -> float:
    """1% above what the class-major plan holds at its peak: one class of the training side, the float64 output,
    one micro-batch of one class and its working set (every term computed here, from the spec)."""
    per_class = nbytes(represent(spec, xt[:1], 0))
    working = spec.working_bytes(xt[:1]) / spec.n_classes
    peak = per_class * len(xt) + 8 * n_query * len(xt) + MICRO_BATCH * (per_class + working)
    return peak * 1.01 / 2**20
