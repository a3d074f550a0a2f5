"""The one writer of result tables: the same rows as Markdown (for people), CSV (for tools) and, where the
report reads them, a verified JSON artifact of the cells."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kernelscope.core.fileio import write_text_atomic
from kernelscope.core.json_artifacts import write_table_json

Cells = Sequence[Sequence[str]]


def markdown_table(header: Sequence[str], rows: Cells, *, text_columns: int = 1, title: str | None = None) -> str:
    """A Markdown table, the first ``text_columns`` left-aligned and the numbers right-aligned."""
    rule = "|" + "---|" * text_columns + "---:|" * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)]
    return "\n".join([*([f"### {title}", ""] if title else []), *lines, ""])


def csv_table(header: Sequence[str], rows: Cells) -> str:
    """Comma-separated, no quoting: every cell is a name or a number."""
    return "\n".join(",".join(line) for line in (header, *rows)) + "\n"


def write_table_files(
    out_dir: str | Path,
    stem: str,
    *,
    markdown: str,
    csv: tuple[Sequence[str], Cells],
    json_cells: tuple[Sequence[str], Cells] | None = None,
) -> list[str]:
    """``stem``.csv and ``stem``.md, and ``stem``.json (the cells the report shows) when ``json_cells`` is given."""
    out_dir = Path(out_dir)
    paths = [
        str(write_text_atomic(out_dir / f"{stem}.csv", csv_table(*csv))),
        str(write_text_atomic(out_dir / f"{stem}.md", markdown)),
    ]
    if json_cells is not None:
        header, rows = json_cells
        paths.append(str(write_table_json(out_dir / f"{stem}.json", list(header), [list(r) for r in rows])))
    return paths


@dataclass
class SummaryTable:
    """One result table of the main job: a title, column names, rows of cells (text), lines after it."""

    key: str  # stable name, e.g. "attribution-comparison-digits10" (the Prefect UI's artifact key)
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The title in bold, the table (a ``|`` inside a cell escaped), then the notes."""

        def cells(row: Sequence[str]) -> list[str]:
            return [text.replace("|", "\\|") for text in row]

        table = markdown_table(cells(self.columns), [cells(row) for row in self.rows])
        return "\n".join([f"**{self.title}**", "", table, *self.notes]).rstrip() + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SummaryTable:
        return cls(**raw)
