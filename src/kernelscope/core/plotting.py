"""The one figure writer: PNG, atomically, with the headless Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kernelscope.core.fileio import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically and release it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
