"""The kernel comparison table (kernel × metric, the NTK-surrogate paper's Table 2 shape)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kernelscope.core.tables import markdown_table, write_table_files

COLUMNS = (
    ("tau_k", "τ_K", ".3f"),
    ("tad", "TAD (pts)", "+.2f"),
    ("r_miss", "R_Miss", ".3f"),
    ("r2_linearization", "R² (App. L)", ".3f"),
    ("kglm_accuracy", "kGLM acc", ".4f"),
    ("nn_accuracy", "NN acc", ".4f"),
)


def comparison_table(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kernel": s["kind"], **{key: float(s.get(key, float("nan"))) for key, _, _ in COLUMNS}} for s in summaries]


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def to_markdown(table: list[dict[str, Any]], title: str) -> str:
    rows = [[r["kernel"], *(_fmt(r[k], spec) for k, _, spec in COLUMNS)] for r in table]
    return markdown_table(["kernel", *(label for _, label, _ in COLUMNS)], rows, title=title)


def csv_cells(table: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the CSV: full precision, empty for NaN (what the report reads too)."""
    rows = [[r["kernel"], *("" if math.isnan(r[k]) else f"{r[k]:.6g}" for k, _, _ in COLUMNS)] for r in table]
    return ["kernel", *(k for k, _, _ in COLUMNS)], rows


def write_comparison(table: list[dict[str, Any]], out_dir: Path, title: str) -> list[str]:
    from kernelscope.surrogate.plots import comparison_bars

    cells = csv_cells(table)
    paths = write_table_files(out_dir, "comparison", markdown=to_markdown(table, title), csv=cells, json_cells=cells)
    return [*paths, str(comparison_bars(Path(out_dir) / "comparison.png", table, title))]
