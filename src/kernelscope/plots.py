"""Figures logged with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.fileio import atomic_path  # noqa: E402


def probability_scatter(path: str | Path, kglm_logit: np.ndarray, nn_logit: np.ndarray, labels: np.ndarray, title: str) -> Path:
    """kGLM vs NN correct-class probability in logit scale, one colour per true class."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    scatter = ax.scatter(kglm_logit, nn_logit, c=labels, cmap="tab10", s=10, alpha=0.75, vmin=0, vmax=9, linewidths=0)
    lo = float(min(np.min(kglm_logit), np.min(nn_logit)))
    hi = float(max(np.max(kglm_logit), np.max(nn_logit)))
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlabel("kGLM: logit of correct-class probability")
    ax.set_ylabel("NN: logit of correct-class probability")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    if len(np.unique(labels)) > 1:
        fig.colorbar(scatter, ax=ax, label="true class")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
