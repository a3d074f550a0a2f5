"""Faithfulness metrics of a surrogate against the network it explains (the NTK-surrogate paper's App. G)."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau


def tau_k(p_nn: np.ndarray, p_kglm: np.ndarray) -> float:
    """Kendall's tau-b between the NN's and the kGLM's correct-class probabilities over the test set.

    Rank-based, so any strictly increasing transform of both inputs (log-probabilities, logits)
    gives the same value; passing logits avoids ties from probabilities that round to 1.0.
    """
    p_nn, p_kglm = np.asarray(p_nn, dtype=np.float64), np.asarray(p_kglm, dtype=np.float64)
    if p_nn.shape != p_kglm.shape or p_nn.ndim != 1:
        raise ValueError(f"tau_k needs two 1-D arrays of equal length, got shapes {p_nn.shape} and {p_kglm.shape}")
    return float(kendalltau(p_nn, p_kglm, variant="b").statistic)


def tad(acc_kglm: float, acc_nn: float) -> float:
    """Test accuracy differential in percentage points: 100 · (acc_kGLM − acc_NN), accuracies as fractions."""
    for name, value in (("acc_kglm", acc_kglm), ("acc_nn", acc_nn)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"tad: {name}={value} is not a fraction in [0, 1]; pass accuracies as fractions")
    return 100.0 * (float(acc_kglm) - float(acc_nn))


def r_miss(y: np.ndarray, pred_nn: np.ndarray, pred_kglm: np.ndarray) -> float:
    """Misclassification coincidence rate.

    |{NN wrong} ∩ {kGLM wrong} ∩ {same prediction}| / |{NN wrong} ∪ {kGLM wrong}|.
    When neither model misclassifies anything the ratio is 0/0 and NaN is returned.
    """
    y, pred_nn, pred_kglm = (np.asarray(a) for a in (y, pred_nn, pred_kglm))
    if not (y.shape == pred_nn.shape == pred_kglm.shape):
        raise ValueError(f"r_miss needs equal shapes, got {y.shape}, {pred_nn.shape}, {pred_kglm.shape}")
    nn_wrong = pred_nn != y
    kglm_wrong = pred_kglm != y
    union = int(np.sum(nn_wrong | kglm_wrong))
    if union == 0:
        return float("nan")
    return float(np.sum(nn_wrong & kglm_wrong & (pred_nn == pred_kglm))) / union
