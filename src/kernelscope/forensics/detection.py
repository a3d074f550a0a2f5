"""Forensic detection of poisoned inputs by their nearest training points, and trace-back to the
poisoned training data (the NTK-surrogate paper's Table 3, and one step beyond it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def top_k_indices(k_rows: np.ndarray, k: int) -> np.ndarray:
    """(n, N) similarities -> (n, k) column indices of the k largest per row (ties: lower index first)."""
    order = np.argsort(-np.asarray(k_rows), axis=1, kind="stable")
    return order[:, :k]


def flag_by_neighbours(k_rows: np.ndarray, train_is_poisoned: np.ndarray, k: int = 5, m: int = 3) -> np.ndarray:
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


def trace_back_scores(k_flagged: np.ndarray, k_unflagged: np.ndarray | None = None) -> np.ndarray:
    """Score of each training point: mean similarity to the flagged test points, minus its mean
    similarity to the unflagged ones when given, (N,).

    The contrast matters: clean training points of the target class are close to the flagged
    inputs too (the network maps both to the target), but they are equally close to clean
    inputs of that class, while poisoned training points are close only to triggered inputs.
    """
    score = np.asarray(k_flagged, dtype=np.float64).mean(axis=0)
    if k_unflagged is not None and len(k_unflagged):
        score = score - np.asarray(k_unflagged, dtype=np.float64).mean(axis=0)
    return score


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
