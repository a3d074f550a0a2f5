"""Figures are drawn one at a time: matplotlib is not thread-safe and flows run tasks on threads."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import matplotlib.pyplot as plt

from kernelscope.core import plotting

SRC = Path(__file__).resolve().parents[1] / "src" / "kernelscope"


def figure_builders() -> list[tuple[str, str, list[str]]]:
    """(file, function, decorators) of every function under src/ that creates a pyplot figure."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = ast.unparse(node)
                if "plt.subplots(" in body or "plt.figure(" in body:
                    decorators = [ast.unparse(d) for d in node.decorator_list]
                    found.append((str(path.relative_to(SRC)), node.name, decorators))
    return found


def test_every_figure_builder_holds_the_figure_lock() -> None:
    builders = figure_builders()
    assert len(builders) >= 20  # the scan sees the plot modules
    unlocked = [f"{file}:{name}" for file, name, decorators in builders if "figure_writer" not in decorators]
    assert unlocked == [], f"wrap these in kernelscope.core.plotting.figure_writer: {unlocked}"


def test_figure_writer_excludes_a_second_thread(tmp_path: Path) -> None:
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    @plotting.figure_writer
    def slow(path: Path) -> Path:
        fig, ax = plt.subplots()
        ax.set_yscale("log")
        ax.plot([1, 2], [1e-3, 1e2])
        inside.set()
        release.wait(5)
        order.append("first")
        return plotting.save_figure(fig, path)

    @plotting.figure_writer
    def quick(path: Path) -> Path:
        order.append("second")
        fig, _ = plt.subplots()
        return plotting.save_figure(fig, path)

    first = threading.Thread(target=slow, args=(tmp_path / "a.png",))
    first.start()
    assert inside.wait(5)
    second = threading.Thread(target=quick, args=(tmp_path / "b.png",))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # blocked on the lock while the first figure is open
    release.set()
    first.join(5)
    second.join(5)
    assert order == ["first", "second"]
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
