"""Figures of the structure probes: layer-Jacobian spectra, Gram spectra, ablation curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernelscope.core.plotting import figure_writer, save_figure  # noqa: E402


@figure_writer
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
        ax.set_title(
            f"{s['source']} → {s['target']}\nrank {s['rank_stacked']}, 99% mass {s['rank_mass_stacked']}, "
            f"PR {s['participation_stacked']:.1f}",
            fontsize=8,
        )
        ax.set_xlabel("index")
    axes[0][0].set_ylabel("σ_i / σ_1")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


@figure_writer
def gram_spectra(path: str | Path, layers: list[dict], title: str) -> Path:
    """Activation and gradient Gram eigenvalues per layer, each divided by its largest, log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for ax, key, label in (
        (axes[0], "activation_eigenvalues", "activation Gram"),
        (axes[1], "gradient_eigenvalues", "gradient Gram"),
    ):
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
    return save_figure(fig, path)


@figure_writer
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
    return save_figure(fig, path)
