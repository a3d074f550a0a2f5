"""Figures of the counterfactual evaluation: LDS per attributor with intervals, LDS against compute time,
brittleness curves, mislabel-detection curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.core.plotting import figure_writer, save_figure  # noqa: E402


@figure_writer
def lds_bars(
    path: str | Path, names: list[str], lds: np.ndarray, low: np.ndarray, high: np.ndarray, title: str
) -> Path:
    """Horizontal bars of the mean LDS per attributor, best on top, with 95% bootstrap intervals."""
    order = np.argsort(lds)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2), dpi=110)
    y = np.arange(len(names))
    ax.barh(y, lds[order], xerr=[lds[order] - low[order], high[order] - lds[order]], color="#4c72b0", capsize=3)
    ax.set_yticks(y, [names[i] for i in order])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("LDS (mean Spearman ρ over test points)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def lds_against_cost(path: str | Path, names: list[str], lds: np.ndarray, seconds: np.ndarray, title: str) -> Path:
    """The cost/accuracy front: LDS against each attributor's wall-clock seconds (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.scatter(np.maximum(seconds, 1e-3), lds, color="#dd8452")
    for name, x, y in zip(names, seconds, lds):
        ax.annotate(name, (max(x, 1e-3), y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds to attribute (this machine)")
    ax.set_ylabel("LDS")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def brittleness_curves(path: str | Path, rows: list[dict], title: str) -> Path:
    """Fraction of predictions flipped against k removed, one line per attributor (random removal dashed)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name in dict.fromkeys(r["attributor"] for r in rows):
        mine = [r for r in rows if r["attributor"] == name]
        ax.errorbar(
            [r["k"] for r in mine],
            [r["flipped"] for r in mine],
            yerr=[[r["flipped"] - r["ci_low"] for r in mine], [r["ci_high"] - r["flipped"] for r in mine]],
            label=name,
            ls="--" if name == "random" else "-",
            marker="o",
            capsize=2,
        )
    return _finish(fig, ax, path, "training points removed (k)", "fraction of predictions flipped", title)


@figure_writer
def mislabel_curves(path: str | Path, curves: dict[str, np.ndarray], flipped: np.ndarray, title: str) -> Path:
    """Fraction of flipped labels found against the fraction of the training set inspected (highest self-scores
    first), one line per attributor; the diagonal is inspecting at random."""
    from kernelscope.counterfactual.mislabel import found_fraction

    grid = np.linspace(0.0, 1.0, 51)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, scores in curves.items():
        ax.plot(grid, [found_fraction(scores, flipped, f) if f > 0 else 0.0 for f in grid], label=name)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", label="random")
    return _finish(fig, ax, path, "fraction of the training set inspected", "fraction of flipped labels found", title)


def _finish(fig: Any, ax: Any, path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, a legend of the lines and the title; the figure saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
