"""From NN and kGLM logits on a test set to the faithfulness report."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kernelscope.models.heads import correct_class_logit, predictions
from kernelscope.surrogate.metrics import r_miss, tad, tau_k


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


def faithfulness(
    y: np.ndarray, nn_logits: np.ndarray, kglm_logits: np.ndarray
) -> tuple[Faithfulness, dict[str, np.ndarray]]:
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
    points = {
        "label": np.asarray(y),
        "nn_logit": logit_nn,
        "kglm_logit": logit_kglm,
        "nn_pred": pred_nn,
        "kglm_pred": pred_kglm,
    }
    return report, points
