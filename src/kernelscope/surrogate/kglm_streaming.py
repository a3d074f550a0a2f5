"""The kGLM fit on a train × train kernel too large for memory (N = 50,000: 10 GB as float32), streamed from disk.

scikit-learn's SGDClassifier.partial_fit runs one SGD epoch per row block, blocks in file order, for a fixed
number of epochs; its learning-rate schedule counts samples across calls, so the passes form one SGD run. With
``standardize`` a first pass computes each column's mean and standard deviation (float64 accumulators of N
values each), and the fit is folded back onto raw kernel values exactly as the in-memory fit's
(kernelscope.surrogate.kglm). Memory: one block, the accumulators and W (C × N), never the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import SGDClassifier

from kernelscope.core.errors import ArtifactError, KernelscopeError
from kernelscope.core.params import Params
from kernelscope.core.provenance import kernel_storage
from kernelscope.kernels.store import iter_kernel_blocks, read_kernel_meta
from kernelscope.surrogate.kglm import KGLM, folded, kglm_fit_options, require_class_labels, require_finite_kernel

# A fresh pass over the kernel: (positions of the rows among the training points (b,), rows (b, N)), in order.
BlockPass = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def column_moments(blocks: BlockPass, n_columns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean (N,), standard deviation (N,), rows seen) of the kernel's columns in one pass. Sums are taken about the
    first block's column means, so values in a narrow band far from 0 (cosine kernels) lose no precision."""
    shift = total = squares = None
    rows = 0
    for _, block in blocks():
        block = np.asarray(block, dtype=np.float64)  # (b, N)
        if shift is None:
            shift, total, squares = block.mean(axis=0), np.zeros(n_columns), np.zeros(n_columns)
        centred = block - shift
        total += centred.sum(axis=0)
        squares += (centred**2).sum(axis=0)
        rows += len(block)
    if not rows:
        raise KernelscopeError("the train × train kernel has no rows; rerun the kernel stage.")
    mean_shifted = total / rows
    variance = np.maximum(squares / rows - mean_shifted**2, 0.0)
    return shift + mean_shifted, np.sqrt(variance), rows


def fit_kglm_streaming(
    blocks: BlockPass,
    y: np.ndarray,
    *,
    alpha: float,
    epochs: int,
    tol: float,
    seed: int,
    standardize: bool = True,
) -> KGLM:
    """Fit kGLM(x) = W κ(x, X) + b by log-loss SGD with partial_fit over the blocks of ``blocks()``, ``epochs``
    passes. Converged: W's largest change over the last epoch is below ``tol`` times its largest entry."""
    y = np.asarray(y)
    classes = require_class_labels(y)
    n = len(y)
    if standardize:
        mean, scale, _ = column_moments(blocks, n)
        scale = np.where(scale > 0, scale, 1.0)
    else:
        mean, scale = np.zeros(n), np.ones(n)
    classifier = SGDClassifier(loss="log_loss", penalty="l2", alpha=alpha, random_state=seed)
    previous, change = None, np.inf
    for _ in range(epochs):
        for positions, block in blocks():
            block = np.asarray(block, dtype=np.float64)
            require_finite_kernel(block)
            classifier.partial_fit((block - mean) / scale, y[positions], classes=classes)
        coef = classifier.coef_.copy()
        if previous is not None:
            change = np.abs(coef - previous).max() / max(np.abs(coef).max(), 1e-12)
        previous = coef
    return folded(classifier, mean, scale, alpha, converged=bool(change < tol))


def streams(params: Params, kind: str, n_train: int) -> bool:
    """Whether the kGLM is fit from row blocks on disk: a dense train × train kernel whose float64 copy would pass
    kernel.memory_budget_mb (a top-k kernel is read whole: k entries a row)."""
    return kernel_storage(params, kind) == "dense" and n_train * n_train * 8 > params.kernel.memory_budget_mb * 2**20


def fit_streamed(
    path: Path, expect: dict[str, Any], train_ids: np.ndarray, targets: np.ndarray, params: Params
) -> tuple[Any, dict[str, Any]]:
    """The streamed fit (kernelscope.surrogate.kglm_streaming) over the verified file's row groups, which must hold
    the training points in order; returns the kGLM and the file's metadata."""

    def one_pass():
        start = 0
        for ids, rows in iter_kernel_blocks(path, expect):
            positions = np.arange(start, start + len(ids))
            if not np.array_equal(ids, train_ids[positions]):
                raise ArtifactError(
                    f"{path}: its query rows are not this run's training points in order; rerun the kernel stage."
                )
            start += len(ids)
            yield positions, rows

    surrogate = fit_kglm_streaming(one_pass, targets, epochs=params.kglm.stream_epochs, **kglm_fit_options(params))
    return surrogate, read_kernel_meta(path, expect)
