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


def comparison_bars(path: str | Path, table: list[dict], title: str) -> Path:
    """τ_K and TAD per kernel, side by side."""
    kernels = [r["kernel"] for r in table]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    ax1.bar(kernels, [r["tau_k"] for r in table], color="tab:blue")
    ax1.set_ylabel("τ_K (Kendall tau-b)")
    ax1.set_ylim(min(0.0, min(r["tau_k"] for r in table)), 1.0)
    ax2.bar(kernels, [r["tad"] for r in table], color="tab:orange")
    ax2.axhline(0, color="0.3", lw=0.8)
    ax2.set_ylabel("TAD (percentage points)")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def residual_cdf(path: str | Path, approx: np.ndarray, exact: np.ndarray, approx_kind: str, exact_kind: str) -> Path:
    """Cumulative histogram of |approx − exact| over off-diagonal entries (the paper's App. F)."""
    n = exact.shape[0]
    off = ~np.eye(n, exact.shape[1], dtype=bool)
    residuals = np.sort(np.abs(approx.astype(np.float64) - exact.astype(np.float64))[off])
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
    ax.plot(residuals, np.arange(1, len(residuals) + 1) / len(residuals), color="tab:purple")
    ax.set_xscale("log")
    ax.set_xlabel(f"|{approx_kind} − {exact_kind}| (cosine values)")
    ax.set_ylabel("fraction of entries ≤ x")
    ax.set_title(f"{approx_kind} residuals: median {np.median(residuals):.2e}, max {residuals[-1]:.2e}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
