"""The README names only what exists: every module of its Layout section, every path and every dotted name."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _layout_block() -> list[str]:
    section = README[README.index("## Layout\n") :]
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
    assert missing == [], f"README Layout names files that do not exist: {missing}"


def test_every_library_module_is_in_the_layout_section():
    named = {Path(p).as_posix() for p in _layout_files()}
    library = REPO / "src" / "kernelscope"
    # every module of every capability package (a subpackage such as data/readers/ is named as a folder)
    modules = sorted(p.relative_to(REPO).as_posix() for p in library.glob("*.py") if p.name != "__init__.py")
    modules += sorted(p.relative_to(REPO).as_posix() for p in library.glob("*/*.py") if p.name != "__init__.py")
    unnamed = [m for m in modules if m not in named]
    assert unnamed == [], f"modules missing from the README's Layout section: {unnamed}"


PATH_PATTERN = re.compile(r"`((?:src|flows|tasks|infra|benchmarks|tests)/[\w./-]+)`")


@pytest.mark.parametrize("path", sorted(set(PATH_PATTERN.findall(README))))
def test_every_path_named_in_backquotes_exists(path):
    assert (REPO / path.rstrip("/")).exists(), f"README names {path}, which does not exist"


DOTTED = re.compile(r"(?<![\w/.-])((?:kernelscope|flows|tasks)(?:\.[a-z_][\w]*)+)")


@pytest.mark.parametrize("name", sorted({n for n in DOTTED.findall(README) if not n.endswith(".env")}))  # a file name
def test_every_dotted_name_resolves(name):
    """A module, or an attribute of one (kernelscope.kernels.store.read_kernel)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(value, attribute), f"README names {name}, but {'.'.join(parts[:cut])} has no {attribute}"
            value = getattr(value, attribute)
        return
    pytest.fail(f"README names {name}, which is no module")
