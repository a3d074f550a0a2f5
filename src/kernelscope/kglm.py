"""Kernel GLM surrogate: kGLM(x) = W κ(x, X) + b fit by log-loss SGD on the train × train kernel."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from kernelscope.errors import ArtifactError, KernelscopeError
from kernelscope.fileio import atomic_path


@dataclass(frozen=True)
class KGLM:
    """weight (C_out, N_train), bias (C_out,); C_out = 1 for two classes (sigmoid link)."""

    weight: np.ndarray
    bias: np.ndarray
    converged: bool = True

    def logits(self, k_query: np.ndarray) -> np.ndarray:
        """(n_query, N_train) kernel -> (n_query, C_out) float64 logits."""
        return np.asarray(k_query, dtype=np.float64) @ self.weight.T + self.bias


def fit_kglm(k_train: np.ndarray, y: np.ndarray, *, alpha: float, max_iter: int, tol: float, seed: int,
             standardize: bool = True) -> KGLM:
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
    k_train = np.asarray(k_train, dtype=np.float64)  # (N, N)
    if not np.all(np.isfinite(k_train)):
        raise KernelscopeError(f"the train × train kernel holds {int((~np.isfinite(k_train)).sum())} NaN or inf values; "
                               "recompute it (kernelscope kernel) from a checkpoint with finite weights.")
    if standardize:
        mean = k_train.mean(axis=0)  # (N,)
        scale = k_train.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        features = (k_train - mean) / scale
    else:
        mean, scale, features = np.zeros(k_train.shape[1]), np.ones(k_train.shape[1]), k_train
    classifier = SGDClassifier(loss="log_loss", penalty="l2", alpha=alpha, max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(features, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not np.array_equal(classifier.classes_, np.arange(len(classifier.classes_))):
        raise ValueError(f"labels must be 0..C-1, got classes {classifier.classes_}")
    coef = classifier.coef_.astype(np.float64)  # (C_out, N), on standardized features
    weight = coef / scale  # W (x - m)/s + b0 = (W/s) x + (b0 - (W/s)·m)
    bias = classifier.intercept_.astype(np.float64) - weight @ mean
    if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
        raise KernelscopeError(f"the kGLM fit diverged to non-finite weights (alpha={alpha:g}); raise kglm.alpha or keep kglm.standardize on.")
    return KGLM(weight=weight, bias=bias, converged=converged)


METADATA_KEY = "kernelscope"


def save_kglm(model: KGLM, path: str | Path, metadata: dict[str, str]) -> None:
    # One metadata key holding sorted JSON: safetensors writes a metadata map in no fixed order,
    # and the same fit must give the same bytes (its hash keys the cache of later steps).
    with atomic_path(path) as tmp:
        save_file({"weight": model.weight, "bias": model.bias}, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def load_kglm(path: str | Path, expect: dict[str, str] | None = None) -> KGLM:
    """Load a saved kGLM; its stored provenance must match ``expect``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: kGLM file not found; run the kglm stage first (kernelscope kglm).")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
            weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ArtifactError(f"{path}: not a readable kGLM file ({error.__class__.__name__}); rerun the kglm stage.") from None
    for key, wanted in (expect or {}).items():
        if meta.get(key) != wanted:
            raise ArtifactError(f"{path}: provenance field '{key}' is {meta.get(key)!r}, expected {wanted!r}; rerun the kglm stage.")
    return KGLM(weight=weight, bias=bias, converged=meta.get("converged", "True") == "True")
