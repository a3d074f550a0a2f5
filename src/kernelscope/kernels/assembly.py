"""Block-by-block kernel assembly: per-chunk representations, Gram blocks, cosine normalization.

A kernel kind is a ``KernelSpec``: how to represent a chunk of inputs (layer factors, projected
features, activations or full Jacobians), how to take the Gram block between two
representations and the self-kernel of one. Assembly walks query chunks against training
chunks and yields finished row blocks, so a kernel larger than memory can be streamed to disk.
Representations are computed in fixed micro-batches padded with zeros, which makes each
sample's features independent of the batch it arrives in.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from kernelscope.core.progress import Progress
from kernelscope.kernels.representation import MICRO_BATCH, KernelSpec, cat_reps, map_tensors, represent, sample_bytes


class ZeroSelfKernelWarning(UserWarning):
    """Some samples have a zero self-kernel (zero gradient or features); their cosine similarities are 0."""


def _warn_zero_self_kernel(kind: str, side: str, n_zero: int, n: int) -> None:
    warnings.warn(
        f"{kind} kernel: {n_zero} of {n} {side} samples have a zero self-kernel "
        "(their gradient or feature vector is zero), "
        "so their cosine similarity to every point is set to 0.",
        ZeroSelfKernelWarning,
        stacklevel=3,
    )


def _slices(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def row_ranges(n_query: int, chunk_size: int, parts: int) -> list[tuple[int, int]]:
    """Cut n_query rows into at most ``parts`` ranges of whole blocks (for row-block tasks)."""
    blocks = _slices(n_query, chunk_size)
    per = -(-len(blocks) // max(1, parts))
    return [(blocks[i].start, blocks[min(i + per, len(blocks)) - 1].stop) for i in range(0, len(blocks), per)]


def kernel_row_blocks(
    spec: KernelSpec,
    x_query: torch.Tensor,
    x_train: torch.Tensor | None,
    *,
    chunk_size: int,
    memory_budget_mb: int,
    progress: bool = False,
    rows: tuple[int, int] | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (query rows, block (rows, n_train) float64) in order, normalized as the spec says.

    ``rows=(start, stop)`` yields only the blocks of that range of query rows; it must fall on
    block boundaries (see ``row_ranges``), so each block is computed exactly as in a full pass.

    Cosine normalization divides by sqrt of the self-kernels. A sample whose self-kernel is 0 (its
    gradient or feature vector is zero, e.g. an all-zero input to a bias-free ReLU network) has no
    direction: its row and column are set to 0 (not NaN) and a ``ZeroSelfKernelWarning`` names how
    many training (and query) samples that affected.
    """
    same = x_train is None
    x_train = x_query if same else x_train
    t_slices = _slices(len(x_train), chunk_size)
    q_slices = _slices(len(x_query), chunk_size)
    if rows is not None:
        start, stop = rows
        if start % chunk_size or (stop % chunk_size and stop != len(x_query)) or not 0 <= start < stop <= len(x_query):
            raise ValueError(f"rows {rows} are not whole blocks of {chunk_size} within {len(x_query)} query rows")
        q_slices = [s for s in q_slices if start <= s.start < stop]
    # Decided on the whole query side, not this task's rows: every row-range task takes the same plan (bytes).
    plan = plan_assembly(spec, x_train, len(x_query), chunk_size, memory_budget_mb)
    if plan == "class_major":
        yield from class_major_blocks(spec, x_query, None if same else x_train, q_slices, t_slices, progress)
        return

    # Pass 1 over the training side: self-kernels, and representations kept when the plan holds them.
    cached: list[Any] | None = [] if plan == "hold" else None
    diag_t = np.empty(len(x_train), dtype=np.float64)
    for s in t_slices:
        rep = represent(spec, x_train[s])
        diag_t[s] = spec.diag(rep).cpu().numpy()
        if cached is not None:
            cached.append(rep)
    # With the training side in memory, one Gram call per query chunk: (rows, all training points).
    train_all = cat_reps(cached) if cached is not None else None
    del cached  # the concatenated copy replaces the per-chunk pieces
    cosine = spec.normalization == "cosine"
    if cosine and (n_zero := int(np.count_nonzero(diag_t == 0))):
        _warn_zero_self_kernel(spec.kind, "training", n_zero, len(diag_t))
    zero_q = n_q = 0
    bar = Progress(len(q_slices), f"{spec.kind} kernel rows", "block", bar=progress)
    for qs in q_slices:
        if same and train_all is not None:
            rq = map_tensors(train_all, lambda t, qs=qs: t[qs])  # a view, no recomputation
        else:
            rq = represent(spec, x_query[qs])
        diag_q = diag_t[qs] if same else spec.diag(rq).cpu().numpy()
        if train_all is not None:
            row = spec.gram(rq, train_all).cpu().numpy()
        else:
            row = np.empty((qs.stop - qs.start, len(x_train)), dtype=np.float64)
            for ts in t_slices:
                row[:, ts] = spec.gram(rq, represent(spec, x_train[ts])).cpu().numpy()
        if cosine:
            row = cosine_normalize(row, diag_q, diag_t)
            if not same:
                zero_q, n_q = zero_q + int(np.count_nonzero(diag_q == 0)), n_q + len(diag_q)
        bar.update()
        yield qs, row
    bar.close()
    if zero_q:
        _warn_zero_self_kernel(spec.kind, "query", zero_q, n_q)


class KernelMemoryWarning(UserWarning):
    """No assembly plan fits ``kernel.memory_budget_mb``; the kernel is assembled with the smallest one."""


def plan_assembly(
    spec: KernelSpec, x_train: torch.Tensor, n_query: int, chunk_size: int, memory_budget_mb: float
) -> str:
    """How to assemble a (n_query, n_train) kernel within the budget, decided before any chunk is represented:

    - "hold": every training representation (all classes) held, one Gram call per query chunk;
    - "class_major": one class of the training side held at a time, the (n_query, n_train) float64 output
      accumulated (trace kernels only; ``class_major_blocks``);
    - "recompute": a training chunk's representation recomputed for every query chunk (two chunks in memory).

    Each plan's peak counts what it holds and the working set of featurizing one micro-batch (every class, or one
    class when class-major). The first that fits the budget in that order is taken; when none does, the smallest,
    with a ``KernelMemoryWarning`` saying what it needs."""
    budget = memory_budget_mb * 2**20
    (per_sample, per_class), n_train = sample_bytes(spec, x_train), len(x_train)
    working = 0 if spec.working_bytes is None else spec.working_bytes(x_train[:1])
    micro_batch = MICRO_BATCH * (per_sample + working)  # one featurization call, every class
    peaks = {
        "hold": per_sample * n_train + micro_batch,
        "recompute": 2 * per_sample * min(chunk_size, max(n_train, n_query)) + micro_batch,
    }
    if per_class is not None:
        one_class = MICRO_BATCH * (per_class + working / spec.n_classes)
        peaks["class_major"] = per_class * n_train + 8 * n_query * n_train + one_class
    for plan in ("hold", "class_major", "recompute"):
        if plan in peaks and peaks[plan] <= budget:
            return plan
    plan = min(peaks, key=peaks.get)
    others = ", ".join(f"{name} {peak / 2**20:,.1f} MB" for name, peak in peaks.items() if name != plan)
    warnings.warn(
        f"{spec.kind} kernel: no assembly plan fits kernel.memory_budget_mb = {memory_budget_mb:g}; the smallest, "
        f"{plan}, needs about {peaks[plan] / 2**20:,.1f} MB ({others}; {per_sample / 2**20:,.3f} MB a sample and "
        f"{working / 2**20:,.1f} MB to form it). Raise kernel.memory_budget_mb, or lower kernel.chunk_size"
        + (", or use proj_pntk (one backward pass a sample)." if per_class is not None else "."),
        KernelMemoryWarning,
        stacklevel=3,
    )
    return plan


def class_major_blocks(
    spec: KernelSpec,
    x_query: torch.Tensor,
    x_train: torch.Tensor | None,
    q_slices: list[slice],
    t_slices: list[slice],
    progress: bool = False,
) -> Iterator[tuple[slice, np.ndarray]]:
    """The row blocks of ``q_slices`` from one class at a time: for each class c, the training side's
    representation of class c is held whole and each query block's Gram with it is added to the output
    (float64, held whole for these rows). For a trace kernel Σ_c ⟨g_c, g'_c⟩ whose all-class training
    representation does not fit the memory budget but one class's does (the exact trNTK of a CIFAR ResNet at
    N = 5,000: 15.6 GB all classes, 1.6 GB one), every gradient is computed once, not once per query block.

    A query block's values depend only on its own rows, so row-range tasks give the bytes of a full pass."""
    same = x_train is None
    x_train = x_query if same else x_train
    first = q_slices[0].start
    n_rows, n_train = q_slices[-1].stop - first, len(x_train)
    k0 = np.zeros((n_rows, n_train), dtype=np.float64)
    diag_t, diag_q = np.zeros(n_train), np.zeros(len(x_query))
    bar = Progress(spec.n_classes, f"{spec.kind} kernel, one class at a time", "class", bar=progress)
    for c in range(spec.n_classes):
        train_c = cat_reps([represent(spec, x_train[s], c) for s in t_slices])  # one class, every training point
        diag_t += spec.diag(train_c).cpu().numpy()
        for qs in q_slices:
            if same:
                rq = map_tensors(train_c, lambda t, qs=qs: t[qs])
            else:
                rq = represent(spec, x_query[qs], c)
                diag_q[qs] += spec.diag(rq).cpu().numpy()
            k0[qs.start - first : qs.stop - first] += spec.gram(rq, train_c).cpu().numpy()
        del train_c
        bar.update()
    bar.close()
    diag_q = diag_t if same else diag_q
    cosine = spec.normalization == "cosine"
    if cosine and (n_zero := int(np.count_nonzero(diag_t == 0))):
        _warn_zero_self_kernel(spec.kind, "training", n_zero, n_train)
    for qs in q_slices:
        row = k0[qs.start - first : qs.stop - first]
        yield qs, cosine_normalize(row, diag_q[qs], diag_t) if cosine else row.copy()
    rows_q = np.concatenate([diag_q[qs] for qs in q_slices])
    if cosine and not same and (n_zero := int(np.count_nonzero(rows_q == 0))):
        _warn_zero_self_kernel(spec.kind, "query", n_zero, len(rows_q))


def cosine_normalize(k0: np.ndarray, diag_q: np.ndarray, diag_t: np.ndarray) -> np.ndarray:
    """K = B_q^{-1/2} K0 B_t^{-1/2} with B the self-kernels; a zero self-kernel gives a zero row/column
    (documented, not NaN)."""
    with np.errstate(divide="ignore"):
        inv_q = np.where(diag_q > 0, 1.0 / np.sqrt(diag_q), 0.0)
        inv_t = np.where(diag_t > 0, 1.0 / np.sqrt(diag_t), 0.0)
    return k0 * inv_q[:, None] * inv_t[None, :]
