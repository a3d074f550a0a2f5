"""Figures of the loss kernel: SGLD loss traces, correlation heatmaps, UMAP maps, superclass covariances."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.core.plotting import figure_writer, save_figure  # noqa: E402


@figure_writer
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
    return save_figure(fig, path)


@figure_writer
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
    return save_figure(fig, path)


def umap_embedding(r: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """(n, n) loss correlation -> (n, 2) UMAP coordinates of the precomputed distance 1 − R (seeded: deterministic).

    The nearest neighbours are read off the distance matrix here (exact, a sort per row) and handed to UMAP as
    ``precomputed_knn``: UMAP's own search over a precomputed matrix is a numba function compiled on each process's
    first call (about 16 s on 2 cores, half of the figure's cost), for the same answer."""
    import umap  # slow first import (numba compiles); only this figure needs it

    distance = np.clip(1.0 - np.asarray(r, dtype=np.float64), 0.0, 2.0)  # (n, n)
    np.fill_diagonal(distance, 0.0)
    k = min(n_neighbors, len(distance) - 1)  # UMAP's own cap on a small data set
    order = np.argsort(np.where(np.eye(len(distance), dtype=bool), -1.0, distance), axis=1, kind="stable")[:, :k]
    knn_dists = np.take_along_axis(distance, order, axis=1)  # (n, k): each point itself first, at distance 0
    with warnings.catch_warnings():  # no search index: UMAP warns that transform() on new points is unavailable
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        reducer = umap.UMAP(
            metric="precomputed", random_state=seed, n_neighbors=k, precomputed_knn=(order, knn_dists, None)
        )
        return reducer.fit_transform(distance)


@figure_writer
def umap_map(
    path: str | Path, embedding: np.ndarray, colourings: dict[str, tuple[np.ndarray, str]], title: str
) -> Path:
    """The (n, 2) embedding once per colouring {name: ((n,) values, colormap)}: categorical labels with 'tab10'
    (0-9), a continuous value (the paper's Fig. 3C: the input b) with any other colormap."""
    fig, axes = plt.subplots(1, len(colourings), figsize=(5.0 * len(colourings) + 0.4, 4.6), dpi=110, squeeze=False)
    for ax, (name, (values, cmap)) in zip(axes[0], colourings.items()):
        limits = {"vmin": 0, "vmax": 9} if cmap == "tab10" else {}
        scatter = ax.scatter(embedding[:, 0], embedding[:, 1], c=values, cmap=cmap, s=6, linewidths=0, **limits)
        fig.colorbar(scatter, ax=ax, label=name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def group_covariances(
    path: str | Path, cov: np.ndarray, labels: np.ndarray, title: str, names: dict[int, str] | None = None
) -> Path:
    """Distributions of the loss covariance within and across label groups (the loss-kernel paper's Fig. 3D).

    Without ``names``: pairs of the same label against pairs of different labels. With ``names`` ({label: name}):
    one distribution per named group's within pairs, and the across-group pairs, on a symmetric-log axis (the
    within-task covariances are heavy-tailed; the across-task ones concentrate near 0).
    """
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    if names is None:
        values = {"same label": cov[same & off], "different label": cov[~same]}
    else:
        values = {
            f"{n} vs {n}": cov[np.ix_(labels == k, labels == k)][off[np.ix_(labels == k, labels == k)]]
            for k, n in names.items()
        }
        values[" vs ".join(names.values()) + " (across)"] = cov[~same]
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    pooled = np.concatenate(list(values.values()))
    if names is None:
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        bins = np.linspace(lo, hi, 80)
    else:
        scale = max(float(np.percentile(np.abs(pooled), 10)), np.finfo(float).tiny)  # linear within ±scale
        edge = max(float(np.abs(pooled).max()), 2 * scale)
        ax.set_xscale("symlog", linthresh=scale)
        ax.tick_params(axis="x", labelsize=7, rotation=45)
        positive = np.geomspace(scale, edge, 40)
        bins = np.concatenate([-positive[::-1], [0.0], positive])
    for label, v in values.items():
        ax.hist(v, bins=bins, density=names is None, alpha=0.55, label=label, histtype="stepfilled")
    ax.set_xlabel("loss covariance K(z, z')")
    ax.set_ylabel("density" if names is None else "pairs")
    if names is not None:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def grokking_curve(path: str | Path, steps: list[int], accuracies: list[dict[str, float]], title: str) -> Path:
    """Train and test accuracy per task against step: memorization, then generalization."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    styles = {"train": "--", "test": "-"}
    colors = {"add": "tab:blue", "div": "tab:orange"}
    for split, ls in styles.items():
        for task, color in colors.items():
            ax.plot(steps, [a[f"{split}_{task}"] for a in accuracies], ls=ls, color=color, label=f"{split} {task}")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def sweep_heatmaps(
    path: str | Path,
    auc: np.ndarray,
    healthy: np.ndarray,
    epsilons: list[float],
    gammas: list[float],
    nbetas: list[float],
    title: str,
    threshold: float,
) -> Path:
    """One panel per nβ: task-separation AUC over ε (columns) × γ (rows), each cell annotated; a cell with a health
    warning is hatched and its value marked '!'. auc, healthy: (nβ, γ, ε); NaN where the sampler diverged."""
    fig, axes = plt.subplots(1, len(nbetas), figsize=(3.2 * len(nbetas) + 0.8, 3.2), dpi=110, squeeze=False)
    image = None
    for k, ax in enumerate(axes[0]):
        image = ax.imshow(auc[k], cmap="viridis", vmin=0.5, vmax=1.0, origin="lower", aspect="auto")
        for i in range(len(gammas)):
            for j in range(len(epsilons)):
                value = auc[k, i, j]
                text = "div." if np.isnan(value) else f"{value:.2f}" + ("" if healthy[k, i, j] else "!")
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="w" if value < 0.8 else "k")
                if not healthy[k, i, j]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", color="r", lw=0))
                if value >= threshold and healthy[k, i, j]:
                    ax.add_patch(plt.Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, color="w", lw=1.2))
        ax.set_xticks(range(len(epsilons)), [f"{e:g}" for e in epsilons], fontsize=7)
        ax.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas], fontsize=7)
        ax.set_xlabel("ε")
        ax.set_ylabel("γ")
        ax.set_title(f"nβ = {nbetas[k]:g}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="task-separation AUC", shrink=0.9)
    fig.suptitle(f"{title} (framed: AUC ≥ {threshold:g}, healthy; '!' hatched: a health warning)", fontsize=9)
    return save_figure(fig, path)
