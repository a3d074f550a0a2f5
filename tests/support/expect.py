"""Independent recomputations of what a stage wrote, for tests to compare with the stage's own numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

# probabilities.csv holds the logits to 6 significant digits: rounding can tie a pair the stage saw apart.
WRITTEN_TAU_TOLERANCE = 2e-3


def written_points(kglm_dir: Path) -> dict[str, np.ndarray]:
    """The columns of an evaluated kGLM's probabilities.csv (one row per test point, correct-class logits)."""
    with open(Path(kglm_dir) / "probabilities.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{kglm_dir}/probabilities.csv has no rows"
    return {name: np.array([float(row[name]) for row in rows]) for name in rows[0]}


def written_tau(kglm_dir: Path) -> float:
    """Kendall's tau-b (scipy) between the NN's and the kGLM's correct-class logits as written to probabilities.csv."""
    points = written_points(kglm_dir)
    return float(kendalltau(points["nn_logit"], points["kglm_logit"], variant="b").statistic)


def written_binary_accuracy(kglm_dir: Path, model: str) -> float:
    """Test accuracy of ``model`` ('nn' or 'kglm') on a two-class dataset from probabilities.csv: a point is right
    exactly when its correct-class logit log(p_y / (1 − p_y)) is positive, i.e. p_y > 1/2."""
    return float((written_points(kglm_dir)[f"{model}_logit"] > 0).mean())
