"""The kernel comparison table (kernel × metric, the NTK-surrogate paper's Table 2 shape)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from kernelscope.core.json_artifacts import write_table_json
from kernelscope.core.fileio import write_text_atomic

COLUMNS = (("tau_k", "τ_K", ".3f"), ("tad", "TAD (pts)", "+.2f"), ("r_miss", "R_Miss", ".3f"),
           ("r2_linearization", "R² (App. L)", ".3f"), ("kglm_accuracy", "kGLM acc", ".4f"), ("nn_accuracy", "NN acc", ".4f"))


def comparison_table(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kernel": s["kind"], **{key: float(s.get(key, float("nan"))) for key, _, _ in COLUMNS}} for s in summaries]


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def to_markdown(table: list[dict[str, Any]], title: str) -> str:
    head = "| kernel | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = ["| " + r["kernel"] + " | " + " | ".join(_fmt(r[k], spec) for k, _, spec in COLUMNS) + " |" for r in table]
    return "\n".join([f"### {title}", "", head, rule, *rows, ""])


def to_csv(table: list[dict[str, Any]]) -> str:
    lines = ["kernel," + ",".join(k for k, _, _ in COLUMNS)]
    lines += [r["kernel"] + "," + ",".join("" if math.isnan(r[k]) else f"{r[k]:.6g}" for k, _, _ in COLUMNS) for r in table]
    return "\n".join(lines) + "\n"


def write_comparison(table: list[dict[str, Any]], out_dir: Path, title: str) -> list[str]:
    from kernelscope.surrogate.plots import comparison_bars

    out_dir = Path(out_dir)
    paths = []
    for name, text in (("comparison.csv", to_csv(table)), ("comparison.md", to_markdown(table, title))):
        paths.append(str(write_text_atomic(out_dir / name, text)))
    cells = list(csv.reader(io.StringIO(to_csv(table))))
    paths.append(str(write_table_json(out_dir / "comparison.json", cells[0], cells[1:])))  # what the report reads, verified
    paths.append(str(comparison_bars(out_dir / "comparison.png", table, title)))
    return paths
