"""Mislabel detection (Koh & Liang 2017; Pruthi et al. 2020): flip a seeded fraction of the training labels,
retrain on them, and rank the training points by self-attribution τ(x_j, x_j).

A flipped point is one the model had to memorize against its neighbours, so it should attribute its own
(wrong) label to itself more than a clean point does. Every attributor gives its self-scores through the
one interface: the noisy training set is both the query and the training side of a run held in memory
(kernels and kGLMs computed from the noisy model here, not read from the clean run's files).
Similarity-only attributors (``kernel:<kind>`` on a cosine-normalized kernel, ``grad_cos``) give every
point the same self-score, hence ROC-AUC 0.5 by construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from kernelscope.core.fileio import sha256_bytes
from kernelscope.core.params import Params
from kernelscope.core.provenance import kernel_options, training_section
from kernelscope.counterfactual.attributors import Run, TracInKeeper
from kernelscope.counterfactual.gradients import MarginGradients, margin_gradients
from kernelscope.data.datasets import Dataset
from kernelscope.kernels.projection import Projector
from kernelscope.models.checkpoint import Checkpoint
from kernelscope.models.heads import predictions
from kernelscope.models.train import predict_logits, train_classifier
from kernelscope.surrogate.kglm import KGLM, fit_kglm, kglm_fit_options

INSPECTED = (0.1, 0.2)  # fractions of the training set inspected, highest self-scores first


def flip_labels(y: np.ndarray, n_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels -> (noisy labels (N,), flipped (N,) bool): round(fraction·N) points, seeded, each moved to a
    uniformly drawn other class."""
    rng = np.random.default_rng([seed, 0x3F1A9])
    n_flip = round(fraction * len(y))
    rows = rng.choice(len(y), size=n_flip, replace=False)
    noisy = np.array(y, dtype=np.int64, copy=True)
    noisy[rows] = (noisy[rows] + rng.integers(1, n_classes, size=n_flip)) % n_classes
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rows] = True
    return noisy, flipped


def self_scores(scores: np.ndarray) -> np.ndarray:
    """(N, N) scores of training points against themselves -> (N,) τ(x_j, x_j). Values equal to within float
    rounding (a cosine self-similarity, 1 ± 1e-7 in float32) are ties: ranking their rounding noise would be chance
    dressed up as signal."""
    diag = np.diag(np.asarray(scores, dtype=np.float64)).copy()
    if np.ptp(diag) <= 1e-6 * max(float(np.abs(diag).max()), np.finfo(np.float64).tiny):
        diag[:] = diag.mean()
    return diag


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (the Mann-Whitney statistic)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # ties take their mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def found_fraction(scores: np.ndarray, positive: np.ndarray, inspected: float) -> float:
    """Fraction of the positives among the round(inspected·N) highest scores; a tie at the cut counts
    by its expected share (ties broken at random, exactly, with no draw)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    budget = round(inspected * len(scores))
    if budget == 0 or not positive.any():
        return 0.0 if positive.any() else float("nan")
    cut = np.sort(scores)[::-1][budget - 1]
    above, at = scores > cut, scores == cut
    share = (budget - above.sum()) / at.sum()
    return float((positive & above).sum() + share * (positive & at).sum()) / float(positive.sum())


@dataclass(frozen=True)
class NoisyRun(Run):
    """A run on the noisy training set, held in memory: its queries are its training points."""

    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # kglm:<k> and kernel:<k> share

    def kernel_rows(self, kind: str) -> np.ndarray:
        """(N, N) kernel of the noisy model on the training points, computed once per kind."""
        if f"kernel:{kind}" not in self.memo:
            self.memo[f"kernel:{kind}"] = self._train_kernel(kind)
        return self.memo[f"kernel:{kind}"]

    def kglm(self, kind: str) -> KGLM:
        if f"kglm:{kind}" not in self.memo:
            self.memo[f"kglm:{kind}"] = self._fit_kglm(kind)
        return self.memo[f"kglm:{kind}"]

    def tracin_checkpoints(self) -> list[tuple[float, nn.Module]]:
        """Kept while ``noisy_run`` trained the model: the noisy training is not replayed."""
        return self.memo["tracin"]

    def gradients(self, model: nn.Module, projector: Projector | None) -> tuple[MarginGradients, MarginGradients]:
        """Queries are the training points: one pass gives both sides; the noisy model's own gradients are kept
        for every attributor that reads them (grad_dot, grad_cos, TRAK's first model)."""
        own = model is self.checkpoint.model
        if own and "gradients" in self.memo:
            return self.memo["gradients"]
        g = margin_gradients(model, self.dataset.train.x, self.dataset.train.y, projector)
        if own:
            self.memo["gradients"] = (g, g)
        return g, g

    def _train_kernel(self, kind: str) -> np.ndarray:
        from kernelscope.kernels import kernel_spec
        from kernelscope.kernels.assembly import kernel_row_blocks

        kp = self.params.kernel
        model = self.checkpoint.model.eval()
        spec = kernel_spec(model, kind, memory_budget_mb=kp.memory_budget_mb, **kernel_options(self.params, kind))
        x = torch.from_numpy(self.dataset.train.x)
        blocks = kernel_row_blocks(spec, x, None, chunk_size=kp.chunk_size, memory_budget_mb=kp.memory_budget_mb)
        return np.concatenate([block for _, block in blocks])  # (N, N)

    def _fit_kglm(self, kind: str) -> KGLM:
        kp = self.params.kglm
        ds = self.dataset
        targets = (
            ds.train.y if kp.target == "labels" else predictions(predict_logits(self.checkpoint.model, ds.train.x))
        )
        return fit_kglm(self.kernel_rows(kind), targets, max_iter=kp.max_iter, **kglm_fit_options(self.params))


def noisy_run(run: Run, fraction: float) -> tuple[NoisyRun, np.ndarray]:
    """The run's training labels flipped (``flip_labels``), a model trained on them by the run's own recipe and
    seed, and that run's flipped mask (N,)."""
    params: Params = run.params
    ds = run.dataset
    noisy_y, flipped = flip_labels(ds.train.y, ds.n_classes, fraction, params.seed)
    train = dataclasses.replace(ds.train, y=noisy_y)
    noisy: Dataset = dataclasses.replace(ds, train=train, test=train)
    _, section = training_section(params, ds.name)
    keep = TracInKeeper(section, params.counterfactual.tracin_every)  # TracIn's checkpoints, without a replay
    model = train_classifier(noisy, section, params.seed, progress=False, after_epoch=keep).model
    state = model.state_dict()
    weights_hash = sha256_bytes(*(state[k].contiguous().numpy().tobytes() for k in sorted(state)))
    checkpoint = Checkpoint(model, {"weights_sha256": weights_hash, "noisy_labels": int(flipped.sum())})
    return NoisyRun(params, run.layout, noisy, checkpoint, memo={"tracin": keep.kept}), flipped
