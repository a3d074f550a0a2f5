"""The README and the docs name only what exists (every module of the Layout page, every path and every dotted
name), the docs build strictly, and the generated pages are current."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = sorted((REPO / "docs").rglob("*.md"))
TEXT = README + "".join(page.read_text(encoding="utf-8") for page in PAGES)  # everything a reader is told


def _layout_block() -> list[str]:
    section = (REPO / "docs" / "layout.md").read_text(encoding="utf-8")
    start = section.index("```\n") + 4
    return section[start : section.index("```\n", start)].splitlines()


TOP = ("src/", "tasks/", "flows/", "infra/", "tests/", "benchmarks/")


def _layout_files() -> list[str]:
    """Every `name.py` and `name/` of the Layout block, as a path from the repository root.

    A line at column 0 naming a folder (``tasks/``) or indented by two (``  core/``, ``  cli.py``: inside
    src/kernelscope/) sets the folder of the names on it and on its continuation lines; a name that starts with a
    top-level folder (``tests/integration/``) is from the root. The params.yaml and dvc.yaml lines name no modules.
    """
    paths: list[str] = []
    folder: Path | None = None
    for line in _layout_block():
        top = re.match(r"^([\w./-]+)\s", line)
        member = re.match(r"^  ([\w]+(?:/[\w]+)*(?:/|\.py))\s", line)
        if top:
            folder = Path(top.group(1)) if top.group(1).endswith("/") else None
            rest = line[top.end() :]
            if folder is not None:
                paths.append(folder.as_posix())
        elif member:
            name = member.group(1)
            folder = Path("src/kernelscope") / name if name.endswith("/") else Path("src/kernelscope")
            paths.append((Path("src/kernelscope") / name).as_posix())
            rest = line[member.end() :]
        else:
            rest = line
        if folder is None:
            continue
        for name in re.findall(r"(?<![\w./-])([a-z_]+(?:/[a-z_]+)*(?:\.py|/))(?![\w])", rest):
            paths.append(name if name.startswith(TOP) else (folder / name).as_posix())
    return paths


def test_every_module_of_the_layout_section_exists():
    paths = _layout_files()
    assert len(paths) > 60  # the section is read at all (one entry per module and folder)
    missing = sorted({p for p in paths if not (REPO / p).exists()})
    assert missing == [], f"docs/layout.md names files that do not exist: {missing}"


def test_every_library_module_is_in_the_layout_section():
    named = {Path(p).as_posix() for p in _layout_files()}
    library = REPO / "src" / "kernelscope"
    # every module of every capability package (a subpackage such as data/readers/ is named as a folder)
    modules = sorted(p.relative_to(REPO).as_posix() for p in library.glob("*.py") if p.name != "__init__.py")
    modules += sorted(p.relative_to(REPO).as_posix() for p in library.glob("*/*.py") if p.name != "__init__.py")
    unnamed = [m for m in modules if m not in named]
    assert unnamed == [], f"modules missing from docs/layout.md: {unnamed}"


PATH_PATTERN = re.compile(r"`((?:src|flows|tasks|infra|benchmarks|tests)/[\w./-]+)`")


@pytest.mark.parametrize("path", sorted(set(PATH_PATTERN.findall(TEXT))))
def test_every_path_named_in_backquotes_exists(path):
    assert (REPO / path.rstrip("/")).exists(), f"the docs name {path}, which does not exist"


DOTTED = re.compile(r"(?<![\w/.-])((?:kernelscope|flows|tasks)(?:\.[a-z_][\w]*)+)")


@pytest.mark.parametrize("name", sorted({n for n in DOTTED.findall(TEXT) if not n.endswith(".env")}))  # a file name
def test_every_dotted_name_resolves(name):
    """A module, or an attribute of one (kernelscope.kernels.store.read_kernel)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(value, attribute), f"the docs name {name}, but {'.'.join(parts[:cut])} has no {attribute}"
            value = getattr(value, attribute)
        return
    pytest.fail(f"the docs name {name}, which is no module")


def test_the_readme_fits_on_two_screens():
    lines = README.count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move the detail to a page under docs/"


def test_the_cli_reference_is_current():
    from infra.docs_reference import stale

    assert stale() == [], "docs/reference/ is stale: run python infra/docs_reference.py"


def test_the_docs_build_strictly(tmp_path):
    """A broken link or anchor, a page missing from the nav or a missing snippet fails the build."""
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Where to go next" in home and "The UIs." in home  # the tour came in from README.md
    for page in PAGES:  # docs/x.md -> site/x/index.html, docs/reference/index.md -> site/reference/index.html
        relative = page.relative_to(REPO / "docs").with_suffix("")
        folder = relative.parent if relative.name == "index" else relative
        assert (site / folder / "index.html").is_file(), f"{page} was not built"


def test_the_results_page_is_rendered_from_the_jobs_verified_record(tmp_path, capsys):
    from flows.job_record import write_job_summary
    from infra.docs_results import main
    from kernelscope.core.params import Params
    from kernelscope.core.tables import SummaryTable

    table = SummaryTable(
        "forensics", "Forensics (digits10)", ["kernel", "precision"], [["trntk", "97.50"], ["a|b", "n/a"]]
    )
    table.notes.append("one line after the table")
    params = Params(outputs=str(tmp_path / "flows"))
    path = write_job_summary(params, [table], {"table": 167.0, "attribution-digits2": 15.2}, 200.4, "params.yaml")
    page = tmp_path / "results.md"
    assert main([str(path), "--out", str(page)]) == 0
    text = page.read_text()
    assert "| kernel | precision |\n|---|---:|\n| trntk | 97.50 |\n| a\\|b | n/a |\n" in text  # a pipe is escaped
    assert "**Forensics (digits10)**" in text and "one line after the table" in text
    assert "| attribution-digits2 | 15 |" in text and "| all flows | 182 |" in text and "200 s" in text
    assert text.index("| table | 167 |") < text.index("| attribution-digits2 |")  # in the order the job ran them
    path.write_text(path.read_text().replace("97.50", "99.90"))  # a number changed by hand
    assert main([str(path), "--out", str(page)]) == 2
    assert str(path) in capsys.readouterr().err and "99.90" not in page.read_text()  # refused, page kept
