"""The multi-seed faithfulness table: per (dataset, architecture), mean(SE) over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernelscope.core.tables import markdown_table, write_table_files
from kernelscope.surrogate.aggregate import format_mean_se, mean_se

METRICS = (
    ("nn_accuracy", "NN test acc (%)", 100.0, False),
    ("tad", "TAD (%)", 1.0, True),
    ("tau_k", "τ_K", 1.0, False),
    ("r_miss", "R_Miss", 1.0, False),
)


def seed_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group per-seed summaries by (dataset, arch); each metric as mean, SE and the 0.708(3) text."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["arch"]), []).append(row)
    table = []
    for (dataset, arch), members in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "arch": arch, "n_models": len(members)}
        for key, _, scale, sign in METRICS:
            mean, se = mean_se([scale * m[key] for m in members])
            entry[key] = {"mean": mean, "se": se, "text": format_mean_se(mean, se, sign=sign)}
        table.append(entry)
    return table


def table_markdown(table: list[dict[str, Any]]) -> str:
    header = ["model (dataset)", "# models", *(label for _, label, _, _ in METRICS)]
    return markdown_table(header, table_cells(table), text_columns=1)


def table_cells(table: list[dict[str, Any]]) -> list[list[str]]:
    """The rows as shown: mean(SE) text per metric."""
    return [
        [f"{t['arch'].upper()} ({t['dataset']})", str(t["n_models"]), *(t[k]["text"] for k, _, _, _ in METRICS)]
        for t in table
    ]


def csv_cells(table: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "arch", "n_models", *(f"{k}_{stat}" for k, _, _, _ in METRICS for stat in ("mean", "se"))]
    rows = [
        [
            t["dataset"],
            t["arch"],
            str(t["n_models"]),
            *(f"{t[k][stat]:.6g}" for k, _, _, _ in METRICS for stat in ("mean", "se")),
        ]
        for t in table
    ]
    return header, rows


def write_table(table: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """faithfulness_table.{md,csv}, and .json (what the report reads, verified)."""
    header = ["model (dataset)", "# models", *(label for _, label, _, _ in METRICS)]
    paths = write_table_files(
        out_dir,
        "faithfulness_table",
        markdown=table_markdown(table),
        csv=csv_cells(table),
        json_cells=(header, table_cells(table)),
    )
    return [paths[1], paths[0], paths[2]]  # .md first, as before
