"""Figures of the forensic runs: poisoned queries beside their nearest training points, trace-back curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.core.plotting import figure_writer, save_figure  # noqa: E402


@figure_writer
def poisoned_neighbour_grid(
    path: str | Path, queries: np.ndarray, neighbours: np.ndarray, poisoned: np.ndarray, title: str
) -> Path:
    """Stamped test images (first column) and their top-5 training neighbours; poisoned neighbours framed red
    (App. N)."""
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
    return save_figure(fig, path)


@figure_writer
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
    return save_figure(fig, path)
