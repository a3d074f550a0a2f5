"""Checks shared by every stage that evaluates a model: refuse NaN or inf instead of reporting NaN metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelscope.core.errors import KernelscopeError


def require_finite_logits(logits: np.ndarray, what: str, model_dir: Path) -> None:
    """Refuse NaN or inf logits instead of reporting NaN metrics from them."""
    if not np.all(np.isfinite(logits)):
        raise KernelscopeError(
            f"{model_dir}: {int((~np.isfinite(logits)).sum())} {what} logits are NaN or inf, so no metric can be "
            "computed; check the checkpoint's weights and inputs or retrain the model."
        )
