"""From NN and kGLM logits on a test set to the faithfulness report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import logsumexp

from kernelscope.surrogate.metrics import r_miss, tad, tau_k


def predictions(logits: np.ndarray) -> np.ndarray:
    """(n, C) logits -> class index; one logit is a sigmoid over classes {0, 1}."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(1)


def correct_class_logit(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log(p_y / (1 − p_y)) computed without forming p_y, so no saturation at 0 or 1.

    One logit z: +z for y = 1 and −z for y = 0. Several: z_y − logsumexp_{c≠y} z_c.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if logits.shape[1] == 1:
        return np.where(y == 1, logits[:, 0], -logits[:, 0])
    rows = np.arange(len(y))
    others = logits.copy()
    others[rows, y] = -np.inf
    return logits[rows, y] - logsumexp(others, axis=1)


@dataclass(frozen=True)
class Faithfulness:
    tau_k: float
    tad: float
    r_miss: float
    nn_accuracy: float
    kglm_accuracy: float
    n_test: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def faithfulness(y: np.ndarray, nn_logits: np.ndarray, kglm_logits: np.ndarray) -> tuple[Faithfulness, dict[str, np.ndarray]]:
    """Metrics plus the per-point columns behind the probability scatter."""
    pred_nn, pred_kglm = predictions(nn_logits), predictions(kglm_logits)
    acc_nn, acc_kglm = float((pred_nn == y).mean()), float((pred_kglm == y).mean())
    logit_nn, logit_kglm = correct_class_logit(nn_logits, y), correct_class_logit(kglm_logits, y)
    report = Faithfulness(
        tau_k=tau_k(logit_nn, logit_kglm),  # Kendall tau-b on correct-class logits (same ranks as probabilities)
        tad=tad(acc_kglm, acc_nn),
        r_miss=r_miss(y, pred_nn, pred_kglm),
        nn_accuracy=acc_nn,
        kglm_accuracy=acc_kglm,
        n_test=int(len(y)),
    )
    points = {"label": np.asarray(y), "nn_logit": logit_nn, "kglm_logit": logit_kglm, "nn_pred": pred_nn, "kglm_pred": pred_kglm}
    return report, points
