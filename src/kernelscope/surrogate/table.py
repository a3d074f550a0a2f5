"""The multi-seed faithfulness table: per (dataset, architecture), mean(SE) over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernelscope.surrogate.aggregate import format_mean_se, mean_se
from kernelscope.core.json_artifacts import write_table_json
from kernelscope.core.fileio import write_text_atomic

METRICS = (("nn_accuracy", "NN test acc (%)", 100.0, False), ("tad", "TAD (%)", 1.0, True),
           ("tau_k", "τ_K", 1.0, False), ("r_miss", "R_Miss", 1.0, False))


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
    head = "| model (dataset) | # models | " + " | ".join(label for _, label, _, _ in METRICS) + " |"
    rule = "|---|---:|" + "---:|" * len(METRICS)
    rows = [f"| {t['arch'].upper()} ({t['dataset']}) | {t['n_models']} | " + " | ".join(t[k]["text"] for k, _, _, _ in METRICS) + " |"
            for t in table]
    return "\n".join([head, rule, *rows, ""])


def table_csv(table: list[dict[str, Any]]) -> str:
    cols = [f"{k}_{stat}" for k, _, _, _ in METRICS for stat in ("mean", "se")]
    lines = ["dataset,arch,n_models," + ",".join(cols)]
    for t in table:
        lines.append(f"{t['dataset']},{t['arch']},{t['n_models']}," + ",".join(f"{t[k][stat]:.6g}" for k, _, _, _ in METRICS for stat in ("mean", "se")))
    return "\n".join(lines) + "\n"


def write_table(table: list[dict[str, Any]], out_dir: Path) -> list[str]:
    out_dir = Path(out_dir)
    paths = []
    markdown = table_markdown(table)
    for name, text in (("faithfulness_table.md", markdown), ("faithfulness_table.csv", table_csv(table))):
        paths.append(str(write_text_atomic(out_dir / name, text)))
    cells = markdown_cells(markdown)
    paths.append(str(write_table_json(out_dir / "faithfulness_table.json", cells[0], cells[1:])))  # what the report reads, verified
    return paths


def markdown_cells(text: str) -> list[list[str]]:
    """The cells of a Markdown table (header first), without the separator line."""
    lines = [line for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]
