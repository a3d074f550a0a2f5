"""Forensic detection of poisoned inputs by their nearest training points, and trace-back to the
poisoned training data (the NTK-surrogate paper's Table 3, and one step beyond it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kernelscope.core.errors import KernelscopeError


def top_k_indices(k_rows: np.ndarray | sp.csr_matrix, k: int) -> np.ndarray:
    """(n, N) similarities -> (n, k) column indices of the k largest per row (ties: lower index first).

    A top-k sparse kernel (CSR, kernel.storage: topk) is ranked among its stored entries only, so each row
    must hold at least k of them; the ranking is then the dense kernel's."""
    if not sp.issparse(k_rows):
        order = np.argsort(-np.asarray(k_rows), axis=1, kind="stable")
        return order[:, :k]
    k_rows = sp.csr_matrix(k_rows)
    stored = np.diff(k_rows.indptr)  # (n,)
    if len(stored) and stored.min() < k:
        raise KernelscopeError(
            f"the top-k kernel keeps {int(stored.min())} entries in some row, fewer than the {k} nearest training "
            "points asked for; set kernel.topk to at least poison.k and rerun the kernel stage."
        )
    rows = np.repeat(np.arange(len(stored)), stored)
    order = np.lexsort((k_rows.indices, -k_rows.data, rows))  # by row, then decreasing value, then lower column
    take = k_rows.indptr[:-1, None] + np.arange(k)  # (n, k): each row's first k in that order
    return k_rows.indices[order][take]


def flag_by_neighbours(
    k_rows: np.ndarray | sp.csr_matrix, train_is_poisoned: np.ndarray, k: int = 5, m: int = 3
) -> np.ndarray:
    """Flag a query when at least m of its k most similar training points are poisoned: (n,) bool."""
    if not 1 <= m <= k:
        raise ValueError(f"need 1 <= m <= k, got k={k}, m={m}")
    neighbours = top_k_indices(k_rows, k)
    return train_is_poisoned[neighbours].sum(axis=1) >= m


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> PrecisionRecall:
    """Precision TP/(TP+FP) and recall TP/(TP+FN); NaN when the denominator is zero."""
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return PrecisionRecall(precision, recall, tp, fp, fn)


def trace_back_scores(
    k_flagged: np.ndarray | sp.spmatrix, k_unflagged: np.ndarray | sp.spmatrix | None = None
) -> np.ndarray:
    """Score of each training point: mean similarity to the flagged test points, minus its mean
    similarity to the unflagged ones when given, (N,). From a top-k kernel, the means count only the
    stored entries (the rest as 0): a training point scores where it is among the queries' nearest.

    The contrast matters: clean training points of the target class are close to the flagged
    inputs too (the network maps both to the target), but they are equally close to clean
    inputs of that class, while poisoned training points are close only to triggered inputs.
    """
    score = _column_means(k_flagged)
    if k_unflagged is not None and k_unflagged.shape[0]:
        score = score - _column_means(k_unflagged)
    return score


def _column_means(k_rows: np.ndarray | sp.spmatrix) -> np.ndarray:
    """(n, N) -> (N,) float64; a top-k kernel's missing entries count as 0."""
    if sp.issparse(k_rows):
        return np.asarray(k_rows.astype(np.float64).mean(axis=0)).ravel()
    return np.asarray(k_rows, dtype=np.float64).mean(axis=0)


def trace_back(scores: np.ndarray, train_is_poisoned: np.ndarray) -> dict:
    """Precision and recall of the top-P training points (P = the true poison count), and the PR curve."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    n_poison = int(train_is_poisoned.sum())
    top = np.argsort(-scores, kind="stable")[:n_poison]
    selected = np.zeros(len(scores), dtype=bool)
    selected[top] = True
    pr = precision_recall(selected, train_is_poisoned)
    precision, recall, _ = precision_recall_curve(train_is_poisoned, scores)
    return {
        "precision_at_p": pr.precision,
        "recall_at_p": pr.recall,
        "n_poisoned": n_poison,
        "average_precision": float(average_precision_score(train_is_poisoned, scores)),
        "curve": {"precision": precision, "recall": recall},
    }
