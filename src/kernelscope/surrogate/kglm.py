"""Kernel GLM surrogate: kGLM(x) = W κ(x, X) + b fit by log-loss SGD on the train × train kernel."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from kernelscope.core.errors import ArtifactError, KernelscopeError
from kernelscope.core.params import Params
from kernelscope.core.tensor_artifacts import read_safetensors, write_safetensors


@dataclass(frozen=True)
class KGLM:
    """weight (C_out, N_train), bias (C_out,); C_out = 1 for two classes (sigmoid link)."""

    weight: np.ndarray
    bias: np.ndarray
    converged: bool = True

    def logits(self, k_query: np.ndarray | sp.spmatrix) -> np.ndarray:
        """(n_query, N_train) kernel, dense or sparse -> (n_query, C_out) float64 logits."""
        if sp.issparse(k_query):
            return np.asarray(k_query.astype(np.float64) @ self.weight.T) + self.bias
        return np.asarray(k_query, dtype=np.float64) @ self.weight.T + self.bias


def kglm_fit_options(params: Params) -> dict[str, Any]:
    """The settings every kGLM fit takes from params (the dense fit adds kglm.max_iter, the streamed fit
    kglm.stream_epochs)."""
    kp = params.kglm
    return {"alpha": kp.alpha, "tol": kp.tol, "seed": params.seed, "standardize": kp.standardize}


def fit_kglm(
    k_train: np.ndarray, y: np.ndarray, *, alpha: float, max_iter: int, tol: float, seed: int, standardize: bool = True
) -> KGLM:
    """Fit scikit-learn's SGDClassifier(loss='log_loss', penalty='l2') on the kernel features, seeded.

    With ``standardize`` the SGD sees each kernel column centred and scaled to unit variance over
    the training rows, and the affine map is folded back into W and b afterwards, so the result
    is still exactly kGLM(x) = W κ(x, X) + b on raw kernel values. Why: cosine-normalized NTK
    values of a trained network sit in a narrow band (0.72–0.93 on digits10), which makes
    the raw columns nearly collinear with a large common offset, and SGD then stops far from the
    optimum (digits10: kGLM accuracy 82% raw against 97% standardized, see the README).

    A kernel with NaN or inf values, or a fit that diverges to non-finite weights, stops with a
    KernelscopeError rather than saving a surrogate whose logits would all be NaN.
    """
    require_class_labels(y)
    if sp.issparse(k_train):
        return _fit_sparse(k_train, y, alpha=alpha, max_iter=max_iter, tol=tol, seed=seed, standardize=standardize)
    k_train = np.asarray(k_train, dtype=np.float64)  # (N, N)
    require_finite_kernel(k_train)
    if standardize:
        mean = k_train.mean(axis=0)  # (N,)
        scale = k_train.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        features = (k_train - mean) / scale
    else:
        mean, scale, features = np.zeros(k_train.shape[1]), np.ones(k_train.shape[1]), k_train
    classifier = SGDClassifier(
        loss="log_loss", penalty="l2", alpha=alpha, max_iter=max_iter, tol=tol, random_state=seed
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(features, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return folded(classifier, mean, scale, alpha, converged)


def require_class_labels(y: np.ndarray) -> np.ndarray:
    """The classes of ``y``, which must be 0..C-1 (every class present): W's rows are indexed by them."""
    classes = np.unique(y)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"labels must be 0..C-1, got classes {classes}")
    return classes


def require_finite_kernel(values: np.ndarray) -> None:
    """Stop before fitting on a kernel with NaN or inf values (its kGLM's logits would all be NaN)."""
    if not np.all(np.isfinite(values)):
        raise KernelscopeError(
            f"the train × train kernel holds {int((~np.isfinite(values)).sum())} NaN or inf values; "
            "recompute it (kernelscope kernel) from a checkpoint with finite weights."
        )


def _fit_sparse(
    k_train: sp.spmatrix, y: np.ndarray, *, alpha: float, max_iter: int, tol: float, seed: int, standardize: bool
) -> KGLM:
    """The fit on a top-k kernel (CSR, missing entries 0). Standardizing scales each column to unit variance without
    centring it, which would fill in every missing entry; the scale is folded back into W as in the dense fit."""
    k_train = sp.csr_matrix(k_train, dtype=np.float64)
    require_finite_kernel(k_train.data)
    n = k_train.shape[1]
    mean = np.zeros(n)
    if standardize:
        first = np.asarray(k_train.mean(axis=0)).ravel()
        second = np.asarray(k_train.multiply(k_train).mean(axis=0)).ravel()
        scale = np.sqrt(np.maximum(second - first**2, 0.0))
        scale = np.where(scale > 0, scale, 1.0)
    else:
        scale = np.ones(n)
    classifier = SGDClassifier(
        loss="log_loss", penalty="l2", alpha=alpha, max_iter=max_iter, tol=tol, random_state=seed
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(k_train @ sp.diags(1.0 / scale), y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return folded(classifier, mean, scale, alpha, converged)


def folded(classifier: SGDClassifier, mean: np.ndarray, scale: np.ndarray, alpha: float, converged: bool) -> KGLM:
    """The kGLM on raw kernel values from a classifier fit on (K − mean) / scale, checked finite."""
    coef = classifier.coef_.astype(np.float64)  # (C_out, N), on standardized features
    weight = coef / scale  # W (x - m)/s + b0 = (W/s) x + (b0 - (W/s)·m)
    bias = classifier.intercept_.astype(np.float64) - weight @ mean
    if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
        raise KernelscopeError(
            f"the kGLM fit diverged to non-finite weights (alpha={alpha:g}); "
            "raise kglm.alpha or keep kglm.standardize on."
        )
    return KGLM(weight=weight, bias=bias, converged=converged)


ARTIFACT = "kglm"


def save_kglm(model: KGLM, path: str | Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """W and b as a verified safetensors artifact; the provenance (sorted JSON, so the same fit gives the same
    bytes: its hash keys the cache of later steps) records every setting of the fit and its kernel."""
    return write_safetensors(
        path, {"weight": model.weight, "bias": model.bias}, ARTIFACT, {**provenance, "converged": bool(model.converged)}
    )


def load_kglm(path: str | Path, expect: dict[str, Any] | None = None) -> KGLM:
    """Load a verified kGLM; its stored provenance must match ``expect``."""
    arrays, meta = read_safetensors(path, ARTIFACT, expect)
    weight, bias = arrays.get("weight"), arrays.get("bias")
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ArtifactError(f"{path}: does not hold a kGLM's 'weight' (C, N) and 'bias' (C,); rerun the kglm stage.")
    return KGLM(
        weight=weight.astype(np.float64), bias=bias.astype(np.float64), converged=bool(meta.get("converged", True))
    )
