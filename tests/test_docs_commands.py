"""Every command of the READMEs' (the project's, the benchmarks') and the docs' ```bash blocks is one the project
can run as written.

Most blocks are too long to run in a test (`make run`, `dvc repro`, a flow on digits10), so each command is
checked against what would run it: a make target exists; a `kernelscope` command parses with the CLI's own
parser and names a params file and a dataset that exist; a `python -c` program compiles, imports only names
that exist and calls them with arguments their signatures take; a `python -m` module or a script exists and its
parser declares every option used; a `dvc` command's subcommand and options are in DVC's own --help, its `-S` keys
are params.yaml's and its targets are stages of dvc.yaml; a params file written by a here-document loads.
The worked example (docs/own-model-and-data.md) is also run in full, by tests/integration/test_worked_example.py.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from kernelscope.cli import build_parser
from kernelscope.core.params import load_params
from tests.support.shell_blocks import Command, page_commands

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
COMMANDS = [command for page in PAGES for command in page_commands(REPO, page)]
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SHELL_ONLY = {"export", "git"}  # the shell's and git's own: nothing of the project to check


def _without_assignments(words: list[str]) -> list[str]:
    """`KERNELSCOPE_DVC_REMOTE=... make push` runs make."""
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    return words


def _written_params(page: str, tmp_path: Path) -> dict[str, Path]:
    """The params files the page's here-documents write (`cat > name.yaml <<'YAML'`), as files of tmp_path."""
    written = {}
    for command in COMMANDS:
        if command.page != page or command.program != "cat":
            continue
        targets = [word[1:] for word in command.words if word.startswith(">")]
        for target, body in zip(targets, command.heredocs):
            written[target] = tmp_path / target
            written[target].write_text(body, encoding="utf-8")
    return written


def _params_file(name: str, written: dict[str, Path]) -> Path:
    path = written.get(name, REPO / name)
    assert path.is_file(), f"names params file {name}, which is neither in the repository nor written on the page"
    return path


@cache
def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):(?!=)", makefile, re.M))


@cache
def _dvc_help(*words: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *words, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, f"dvc {' '.join(words)} --help: {done.stderr.strip()}"
    return done.stdout


def _options(words: list[str]) -> list[str]:
    """The options a command uses, without values: -am is -a and -m, --x=1 is --x."""
    options = []
    for word in words:
        if word.startswith("--"):
            options.append(word.split("=", 1)[0])
        elif re.fullmatch(r"-[A-Za-z]+", word):
            options.extend(f"-{letter}" for letter in word[1:])
    return options


def _dotted(tree: dict, key: str) -> bool:
    node: object = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _stage_names() -> set[str]:
    """dvc.yaml's stages, with `name@item` for every item a foreach over params.yaml expands to."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    names = set(pipeline)
    for name, stage in pipeline.items():
        over = stage.get("foreach")
        if isinstance(over, str) and (reference := re.fullmatch(r"\$\{([\w.]+)\}", over)):
            over = params
            for part in reference.group(1).split("."):
                over = over[part]
        if isinstance(over, list):
            names |= {f"{name}@{item}" for item in over}
    return names


def _known_datasets(written: dict[str, Path]) -> set[str]:
    """The datasets of params.yaml (with its built-in sources) and those other params files name."""
    defaults = load_params(REPO / "params.yaml")
    names = set(defaults.datasets) | set(defaults.sources)
    for path in [REPO / "params-mnist.yaml", *written.values()]:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # raw: params-mnist.yaml's paths need a variable
        names |= set(raw.get("datasets", [])) | set(raw.get("sources", {}))
    return names


def check_make(words: list[str], written: dict[str, Path]) -> None:
    targets = [word for word in words[1:] if not word.startswith("-")]
    assert targets, "make with no target"
    for target in targets:
        assert target in _make_targets(), f"make {target}: no such target in the Makefile"


def check_kernelscope(words: list[str], written: dict[str, Path]) -> None:
    try:
        args = build_parser().parse_args(words[1:])
    except SystemExit as error:
        pytest.fail(f"kernelscope's parser refuses {words[1:]} (exit {error.code})")
    if getattr(args, "params", None):
        _params_file(args.params, written)
    for field in ("dataset", "subject"):
        name = getattr(args, field, None)
        if name:
            assert name in _known_datasets(written), f"--{field} {name}: no such dataset in the params files"


def _imported(tree: ast.Module) -> dict[str, object]:
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name] = importlib.import_module(alias.name)
    return names


def check_python_c(code: str, written: dict[str, Path]) -> None:
    tree = ast.parse(code)
    names = _imported(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".yaml"):
            _params_file(node.value, written)
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        function = names[node.func.id]
        signature = inspect.signature(getattr(function, "fn", function))  # a Prefect flow: its function
        try:
            signature.bind(*node.args, **{keyword.arg: keyword.value for keyword in node.keywords if keyword.arg})
        except TypeError as error:
            pytest.fail(f"{node.func.id}(...) does not fit {node.func.id}{signature}: {error}")
        for keyword in node.keywords:
            if keyword.arg in ("dataset", "subject") and isinstance(keyword.value, ast.Constant):
                assert keyword.value.value in _known_datasets(written), f"{keyword.arg}={keyword.value.value!r}"


def _declared_options(source: Path) -> set[str]:
    """The options a module's argparse parser declares (read from its source: importing flows.main for its
    --help costs seconds of Prefect and torch)."""
    declared = {"-h", "--help"}
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            declared |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return declared


def check_python(words: list[str], written: dict[str, Path]) -> None:
    if words[1].endswith(".py"):  # a script of the repository (benchmarks/…)
        script = REPO / words[1]
        assert script.is_file(), f"{words[1]}: no such script"
        declared = _declared_options(script)
        for option in _options(words[2:]):
            assert option in declared, f"{words[1]}: {option} is not among its options {sorted(declared)}"
        return
    if words[1] == "-c":
        check_python_c(words[2], written)
        return
    assert words[1] == "-m", f"python {words[1]}: the docs run modules (-m) or programs (-c)"
    module = words[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"python -m {module}: no such module"
    declared = _declared_options(Path(spec.origin))
    for option in _options(words[3:]):
        assert option in declared, f"python -m {module}: {option} is not among its options {sorted(declared)}"
    if "--params" in words:
        _params_file(words[words.index("--params") + 1], written)


def check_dvc(words: list[str], written: dict[str, Path]) -> None:
    command = [words[1]]
    groups = re.search(r"\{([\w,-]+)\}", _dvc_help(words[1]).split("\n\n")[0])
    if groups and len(words) > 2 and words[2] in groups.group(1).split(","):
        command.append(words[2])
    usage = _dvc_help(*command)
    for option in _options(words[1 + len(command) :]):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", usage), f"dvc {' '.join(command)}: no {option}"
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    rest = words[1 + len(command) :]
    for flag, value in zip(rest, rest[1:]):
        if flag == "-S":
            key = value.split("=", 1)[0]
            assert _dotted(params, key), f"-S {key}: no such key in params.yaml"
    if command in (["exp", "run"], ["repro"]):
        values = {"-n", "-S", "-j", "-C", "-m"}
        targets = [word for i, word in enumerate(rest) if not word.startswith("-") and rest[i - 1] not in values]
        for target in targets if rest else []:
            assert target in _stage_names(), f"dvc {' '.join(command)} {target}: no such stage in dvc.yaml"


def check_cat(words: list[str], written: dict[str, Path]) -> None:
    targets = [word[1:] for word in words if word.startswith(">")]
    assert targets, "cat without a file to write"
    for target in targets:
        if target.endswith(".yaml"):
            load_params(written[target])  # a params file the reader writes must load


CHECKS = {
    "make": check_make,
    "kernelscope": check_kernelscope,
    "python": check_python,
    "dvc": check_dvc,
    "cat": check_cat,
}


def test_the_pages_have_commands_of_every_kind():
    programs = {_without_assignments(command.words)[0].removeprefix(".venv/bin/") for command in COMMANDS}
    assert {"make", "kernelscope", "python", "dvc"} <= programs
    assert programs <= set(CHECKS) | SHELL_ONLY, f"commands nobody checks: {programs - set(CHECKS) - SHELL_ONLY}"


@pytest.mark.parametrize("command", COMMANDS, ids=[command.label for command in COMMANDS])
def test_documented_command_is_runnable_as_written(command: Command, tmp_path: Path):
    words = _without_assignments(command.words)
    if words[0] == ".venv/bin/python":  # the venv's interpreter, as the benchmarks' README calls it
        words = ["python", *words[1:]]
    check = CHECKS.get(words[0])
    if check is None:
        assert words[0] in SHELL_ONLY
        return
    check(words, _written_params(command.page, tmp_path))


@pytest.mark.parametrize(
    "words",
    [
        ["make", "no-such-target"],
        ["kernelscope", "kernel", "--no-such-option"],
        ["kernelscope", "kglm", "--dataset", "no_such_dataset"],
        ["python", "-c", "from flows.surrogate import no_such_flow"],
        ["python", "-c", "from flows.surrogate import attribution; attribution(no_such_argument=1)"],
        ["python", "-c", "from kernelscope.core.params import load_params; load_params('no-such.yaml')"],
        ["python", "-m", "flows.main", "--no-such-option"],
        ["python", "benchmarks/no_such_bench.py"],
        ["python", "benchmarks/resnet_bench.py", "--no-such-option"],
        ["dvc", "exp", "run", "--no-such-option"],
        ["dvc", "exp", "run", "-S", "kglm.no_such_key=1", "kglm@digits2"],
        ["dvc", "exp", "run", "kglm@no_such_dataset"],
    ],
    ids=lambda words: " ".join(words),
)
def test_a_stale_command_is_caught(words: list[str], tmp_path: Path):
    """The checks fail on what a renamed target, option, flow, argument, file, key or stage would leave."""
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        CHECKS[words[0]](words, {})
