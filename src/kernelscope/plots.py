"""Figures logged with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.fileio import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically and release it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


def attribution_boxplot(path: str | Path, attribution: np.ndarray, train_labels: np.ndarray, n_classes: int, title: str) -> Path:
    """Distribution of one logit's attributions over the training points of each class (the paper's Fig. 2C)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    ax.boxplot([attribution[train_labels == t] for t in range(n_classes)], showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, n_classes + 1), [str(t) for t in range(n_classes)])
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("training class")
    ax.set_ylabel("attribution")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def neighbour_grid(path: str | Path, query: np.ndarray, neighbours: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   query_label: int | None) -> Path:
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
    return _save(fig, path)


def poisoned_neighbour_grid(path: str | Path, queries: np.ndarray, neighbours: np.ndarray, poisoned: np.ndarray, title: str) -> Path:
    """Stamped test images (first column) and their top-5 training neighbours; poisoned neighbours framed red (App. N)."""
    n, k = neighbours.shape[:2]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.2 * (k + 1), 1.2 * n), dpi=110, squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(queries[r], cmap="gray_r")
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(neighbours[r, c], cmap="gray_r")
            if poisoned[r, c]:
                for side in ax.spines.values():
                    side.set_edgecolor("red")
                    side.set_linewidth(2.5)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("query", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def trace_back_curves(path: str | Path, curves: dict[str, dict[str, np.ndarray]], n_poisoned: int) -> Path:
    """Precision–recall of recovering the poisoned training points, one curve per kernel."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=110)
    for kind, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=kind)
    ax.set_xlabel("recall of poisoned training points")
    ax.set_ylabel("precision")
    ax.set_title(f"Trace-back from flagged test points ({n_poisoned} poisoned)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def loss_traces(path: str | Path, trace: np.ndarray, at_optimum: float, title: str) -> Path:
    """SGLD minibatch loss per chain against step, with L_n(w*) for reference."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for c, row in enumerate(trace):
        ax.plot(row, lw=0.7, label=f"chain {c}")
    ax.axhline(at_optimum, color="k", ls="--", lw=0.8, label="L_n(w*)")
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("minibatch loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def correlation_heatmap(path: str | Path, r: np.ndarray, labels: np.ndarray, title: str, max_points: int = 600) -> Path:
    """The loss-correlation matrix with points sorted by label (a seeded subsample when large)."""
    idx = np.arange(len(labels))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_points, replace=False))
    order = idx[np.argsort(labels[idx], kind="stable")]
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    image = ax.imshow(r[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    bounds = np.flatnonzero(np.diff(labels[order])) + 0.5
    for b in bounds:
        ax.axhline(b, color="k", lw=0.3)
        ax.axvline(b, color="k", lw=0.3)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("points sorted by label")
    fig.colorbar(image, ax=ax, label="loss correlation R")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def umap_map(path: str | Path, r: np.ndarray, labels: np.ndarray, title: str, seed: int = 0) -> Path:
    """UMAP of the points with the precomputed distance 1 − R, coloured by label (seeded, so deterministic)."""
    import umap  # slow first import (numba compiles); only this figure needs it

    distance = np.clip(1.0 - np.asarray(r, dtype=np.float64), 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    embedding = umap.UMAP(metric="precomputed", random_state=seed, n_neighbors=15).fit_transform(distance)
    fig, ax = plt.subplots(figsize=(5.4, 4.6), dpi=110)
    scatter = ax.scatter(embedding[:, 0], embedding[:, 1], c=labels, cmap="tab10", s=6, vmin=0, vmax=9, linewidths=0)
    fig.colorbar(scatter, ax=ax, label="label")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def group_covariances(path: str | Path, cov: np.ndarray, labels: np.ndarray, title: str) -> Path:
    """Distributions of the loss covariance within and across label groups (the loss-kernel paper's Fig. 3D)."""
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    values = [cov[same & off], cov[~same]]
    lo, hi = np.percentile(np.concatenate(values), [0.5, 99.5])
    bins = np.linspace(lo, hi, 80)
    ax.hist(values[0], bins=bins, density=True, alpha=0.6, label="same label")
    ax.hist(values[1], bins=bins, density=True, alpha=0.6, label="different label")
    ax.set_xlabel("loss covariance K(z, z')")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def jacobian_spectra(path: str | Path, spectra: list[dict], title: str) -> Path:
    """Per layer pair: the stacked Jacobian's singular values and the mean per-point spectrum, each
    divided by its largest value, on a log scale (the rank shows as the drop to round-off)."""
    fig, axes = plt.subplots(1, len(spectra), figsize=(3.4 * len(spectra), 3.4), dpi=110, squeeze=False)
    for ax, s in zip(axes[0], spectra):
        stacked = np.asarray(s["stacked"], dtype=np.float64)
        per_point = np.asarray(s["per_point_mean"], dtype=np.float64)
        for values, label in ((stacked, "stacked over points"), (per_point, "per point (mean)")):
            top = values.max() if values.size and values.max() > 0 else 1.0
            ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values / top, 1e-17), lw=1.2, label=label)
        ax.axvline(s["rank_stacked"], color="0.5", ls=":", lw=0.8)
        ax.set_title(f"{s['source']} → {s['target']}\nrank {s['rank_stacked']}, 99% mass {s['rank_mass_stacked']}, "
                     f"PR {s['participation_stacked']:.1f}", fontsize=8)
        ax.set_xlabel("index")
    axes[0][0].set_ylabel("σ_i / σ_1")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def gram_spectra(path: str | Path, layers: list[dict], title: str) -> Path:
    """Activation and gradient Gram eigenvalues per layer, each divided by its largest, log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for ax, key, label in ((axes[0], "activation_eigenvalues", "activation Gram"), (axes[1], "gradient_eigenvalues", "gradient Gram")):
        for layer in layers:
            values = np.asarray(layer[key], dtype=np.float64)
            top = values.max() if values.size and values.max() > 0 else 1.0
            ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values / top, 1e-17), lw=1.0, label=layer["layer"])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("index")
        ax.set_ylabel("λ_i / λ_1")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def ablation_curves(path: str | Path, curves: dict[str, dict[str, dict[str, list]]], title: str) -> Path:
    """Test accuracy against directions kept, per layer: interaction basis against PCA."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.4), dpi=110, squeeze=False)
    for ax, (layer, by_basis) in zip(axes[0], curves.items()):
        for name, curve in by_basis.items():
            ax.plot(curve["kept"], curve["accuracy"], marker=".", ms=3, lw=1.1, label=name)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("directions kept (least important removed first)")
        ax.set_xscale("symlog", linthresh=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
