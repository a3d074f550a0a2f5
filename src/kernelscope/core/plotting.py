"""The one figure writer: PNG, atomically, with the headless Agg backend, one figure at a time.

Matplotlib is not thread-safe (its mathtext parser and pyplot's figure registry are shared), and flows
run tasks side by side on threads: two figures drawn at once have failed with a ParseException on a
tick label. Every function that builds a figure is wrapped in ``figure_writer``, which holds one lock
for the whole build-and-save (tests/test_plotting.py checks that each of them is).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kernelscope.core.fileio import atomic_path  # noqa: E402

FIGURE_LOCK = threading.RLock()  # re-entrant: a figure writer may call another

P = ParamSpec("P")
R = TypeVar("R")


def figure_writer(build: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-building function under the process-wide figure lock."""

    @functools.wraps(build)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with FIGURE_LOCK:
            return build(*args, **kwargs)

    return locked


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically and release it."""
    path = Path(path)
    with FIGURE_LOCK, atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
