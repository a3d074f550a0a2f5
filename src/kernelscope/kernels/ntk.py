"""Exact trace-NTK kernels assembled block by block from chunked Jacobians."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kernelscope.kernels.jacobians import jacobian_rows, output_count, parameter_count


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _flat_jacobians(model: nn.Module, x: torch.Tensor, chunk_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, J) with J of shape (rows, C·P): Σ_c ⟨g_c, g'_c⟩ is then a plain dot product."""
    for rows in _chunks(len(x), chunk_size):
        jac = jacobian_rows(model, x[rows])  # (b, C, P)
        yield rows, jac.reshape(jac.shape[0], -1)


def trace_ntk0(model: nn.Module, x_query: torch.Tensor, x_train: torch.Tensor | None, *, chunk_size: int = 128,
               memory_budget_mb: int = 2048, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalized trace NTK K0 (n_query, n_train) and the self-kernels of both sides (float64).

    Jacobians of the training side are kept in memory when they fit ``memory_budget_mb``;
    otherwise each (query chunk, train chunk) block recomputes both sides. Block products run
    in the model's dtype; the assembled matrix is float64.
    """
    same = x_train is None
    x_train = x_query if same else x_train
    n_q, n_t = len(x_query), len(x_train)
    width = output_count(model, x_train) * parameter_count(model)  # C·P
    bytes_per = x_train.element_size()
    k0 = np.empty((n_q, n_t), dtype=np.float64)
    diag_q = np.empty(n_q, dtype=np.float64)
    diag_t = np.empty(n_t, dtype=np.float64)

    cache_train = n_t * width * bytes_per <= memory_budget_mb * 2**20
    n_blocks = -(-n_q // chunk_size) * (1 if cache_train else -(-n_t // chunk_size))
    bar = tqdm(total=n_blocks, desc="trNTK blocks", unit="block", disable=not progress, leave=False)
    if cache_train:
        j_train = torch.empty((n_t, width), dtype=x_train.dtype, device=x_train.device)  # (n_train, C·P)
        for rows, j in _flat_jacobians(model, x_train, chunk_size):
            j_train[rows] = j
        diag_t[:] = (j_train * j_train).sum(1).double().cpu().numpy()
        for rows, jq in (_flat_jacobians(model, x_query, chunk_size) if not same else
                         ((r, j_train[r]) for r in _chunks(n_q, chunk_size))):
            k0[rows] = (jq @ j_train.T).double().cpu().numpy()
            diag_q[rows] = (jq * jq).sum(1).double().cpu().numpy()
            bar.update()
        del j_train
    else:
        for q_rows, jq in _flat_jacobians(model, x_query, chunk_size):
            diag_q[q_rows] = (jq * jq).sum(1).double().cpu().numpy()
            for t_rows, jt in _flat_jacobians(model, x_train, chunk_size):
                k0[q_rows, t_rows] = (jq @ jt.T).double().cpu().numpy()
                if q_rows.start == 0:
                    diag_t[t_rows] = (jt * jt).sum(1).double().cpu().numpy()
                bar.update()
    bar.close()
    if same:
        diag_t = diag_q
    return k0, diag_q, diag_t


def cosine_normalize(k0: np.ndarray, diag_q: np.ndarray, diag_t: np.ndarray) -> np.ndarray:
    """K = B_q^{-1/2} K0 B_t^{-1/2} with B the self-kernels; a zero self-kernel gives a zero row/column."""
    with np.errstate(divide="ignore"):
        inv_q = np.where(diag_q > 0, 1.0 / np.sqrt(diag_q), 0.0)
        inv_t = np.where(diag_t > 0, 1.0 / np.sqrt(diag_t), 0.0)
    return k0 * inv_q[:, None] * inv_t[None, :]
