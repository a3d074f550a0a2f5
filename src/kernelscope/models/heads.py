"""Output heads: from a classifier's logits to classes, probabilities and losses, in one place.

The convention, for every model of the project (trained here, a user's, a kGLM surrogate):

* a binary model has **one** output logit z, the log-odds of class 1: p(1) = sigmoid(z), p(0) = sigmoid(−z);
* a model of C > 2 classes has **C** logits with a softmax link.

A user's binary model may also return two logits (softmax over both); everything here then takes
the multiclass path. Logits are (n, C_out) with C_out = 1 or C, labels (n,) integers in [0, C).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit, logsumexp, softmax

Logits = TypeVar("Logits", np.ndarray, torch.Tensor)


def n_outputs_for(n_classes: int) -> int:
    """Logits a registry model has for this many classes: one for two (sigmoid link), else one per class."""
    return 1 if n_classes == 2 else n_classes


def accepted_outputs(n_classes: int) -> set[int]:
    """Logit counts a user's model may return for this many classes (two classes: one logit or two)."""
    return {n_classes} | ({1} if n_classes == 2 else set())


def is_binary(logits: np.ndarray | torch.Tensor) -> bool:
    """One logit column: the sigmoid head."""
    return logits.shape[1] == 1


def predictions(logits: Logits) -> Logits:
    """(n, C_out) logits -> (n,) int64 class indices, as numpy or torch like the input; one logit: class 1 iff z > 0.

    numpy inputs are read as float64 first.
    """
    if isinstance(logits, torch.Tensor):
        return (logits[:, 0] > 0).long() if is_binary(logits) else logits.argmax(1)
    logits = np.asarray(logits, dtype=np.float64)
    return (logits[:, 0] > 0).astype(np.int64) if is_binary(logits) else logits.argmax(1)


def correct_class_logit(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, C_out) logits, (n,) labels -> (n,) float64 log(p_y / (1 − p_y)).

    Computed without forming p_y, so no saturation at 0 or 1.
    One logit z: +z for y = 1 and −z for y = 0. Several: z_y − logsumexp_{c≠y} z_c.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if is_binary(logits):
        return np.where(y == 1, logits[:, 0], -logits[:, 0])
    rows = np.arange(len(y))
    others = logits.copy()
    others[rows, y] = -np.inf
    return logits[rows, y] - logsumexp(others, axis=1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The torch (differentiable) form of ``correct_class_logit``: (n, C_out), (n,) -> (n,) log(p_y / (1 − p_y))."""
    if is_binary(logits):
        return torch.where(y == 1, logits[:, 0], -logits[:, 0])
    rows = torch.arange(len(y))
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf)
    return logits[rows, y] - torch.logsumexp(others, dim=1)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(..., C_out) logits -> (..., classes) probabilities (numpy); one logit z: [1 − sigmoid(z), sigmoid(z)]."""
    logits = np.asarray(logits)
    if logits.shape[-1] == 1:
        p1 = expit(logits[..., 0])
        return np.stack([1 - p1, p1], axis=-1)
    return softmax(logits, axis=-1)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(n, C_out) logits -> (n, classes) log-probabilities (torch); one logit z: [log σ(−z), log σ(z)]."""
    if is_binary(logits):
        z = logits[:, 0]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)
    return F.log_softmax(logits, dim=1)


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, C_out) logits, (n,) labels -> (n,) losses: binary cross-entropy on one logit, cross-entropy on several."""
    if is_binary(logits):
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, y, reduction="none")


def precise_per_sample_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``per_sample_loss`` evaluated in float64: (n, C_out) logits, (n,) labels -> (n,) float64 losses.

    In float32 a confident model's losses (1e-7 and below) are rounded to multiples of 1.2e-7 (the spacing of
    floats near the logsumexp they are subtracted from): a loss kernel of such a model is mostly rounding.
    """
    return per_sample_loss(logits.double(), y)


def mean_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss, the mean of ``per_sample_loss``: reduced inside torch's loss call, whose summation
    order the trained weights depend on (do not replace it by ``per_sample_loss(...).mean()``)."""
    if is_binary(logits):
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y)
