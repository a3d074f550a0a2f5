"""Small modules: no file of the library, the flows or the tasks runs past 300 lines."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 300


def test_no_module_is_over_300_lines():
    files = [p for folder in ("src/kernelscope", "flows", "tasks") for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 80  # the tree is read at all
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in files
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert long == {}, f"split these modules (over {LIMIT} lines): {long}"
