"""Figures of the NTK-surrogate runs: faithfulness scatter, kernel comparison, residuals, linearization,
attributions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.core.plotting import figure_writer, save_figure  # noqa: E402


@figure_writer
def probability_scatter(
    path: str | Path, kglm_logit: np.ndarray, nn_logit: np.ndarray, labels: np.ndarray, title: str
) -> Path:
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
    return save_figure(fig, path)


@figure_writer
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
    return save_figure(fig, path)


@figure_writer
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
    return save_figure(fig, path)


@figure_writer
def linearization_parity(path: str | Path, p_mapped: np.ndarray, p_nn: np.ndarray, title: str) -> Path:
    """Parity plot in logit scale: the linearized kGLM probability against the NN's."""
    eps = 1e-7
    keep = (p_nn > eps) & (p_nn < 1 - eps) & (p_mapped > eps) & (p_mapped < 1 - eps)
    lx, ly = np.log(p_mapped[keep] / (1 - p_mapped[keep])), np.log(p_nn[keep] / (1 - p_nn[keep]))
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.scatter(lx, ly, s=10, alpha=0.7, linewidths=0)
    if keep.any():
        lo, hi = float(min(lx.min(), ly.min())), float(max(lx.max(), ly.max()))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
    ax.set_xlabel("logit of linearized kGLM probability φ(p_kGLM)")
    ax.set_ylabel("logit of NN probability")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def attribution_heatmap(path: str | Path, summary: np.ndarray, title: str) -> Path:
    """Mean attribution from each training class (rows) to each logit (columns), the paper's Fig. 2B."""
    fig, ax = plt.subplots(figsize=(5.4, 4.4), dpi=110)
    bound = float(np.abs(summary).max()) or 1.0
    image = ax.imshow(summary, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xlabel("logit")
    ax.set_ylabel("training class")
    ax.set_xticks(range(summary.shape[1]))
    ax.set_yticks(range(summary.shape[0]))
    fig.colorbar(image, ax=ax, label="mean attribution")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def attribution_boxplot(
    path: str | Path, attribution: np.ndarray, train_labels: np.ndarray, n_classes: int, title: str
) -> Path:
    """Distribution of one logit's attributions over the training points of each class (the paper's Fig. 2C)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    ax.boxplot(
        [attribution[train_labels == t] for t in range(n_classes)], showfliers=True, flierprops={"markersize": 2}
    )
    ax.set_xticks(range(1, n_classes + 1), [str(t) for t in range(n_classes)])
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("training class")
    ax.set_ylabel("attribution")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def neighbour_grid(
    path: str | Path,
    query: np.ndarray,
    neighbours: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    query_label: int | None,
) -> Path:
    """The query image and its top-5 most similar training images under each kernel (one row per kernel)."""
    kinds = list(neighbours)
    cols = 1 + max(len(v) for v in neighbours.values())
    fig, axes = plt.subplots(len(kinds), cols, figsize=(1.3 * cols, 1.4 * len(kinds)), dpi=110, squeeze=False)
    for r, kind in enumerate(kinds):
        axes[r, 0].imshow(query, cmap="gray_r")
        axes[r, 0].set_title("query" + (f" ({query_label})" if query_label is not None else ""), fontsize=7)
        axes[r, 0].set_ylabel(kind, fontsize=8)
        for c, (img, lab) in enumerate(zip(neighbours[kind], labels[kind]), start=1):
            axes[r, c].imshow(img, cmap="gray_r")
            axes[r, c].set_title(f"label {lab}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)
