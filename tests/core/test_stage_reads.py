"""core/stage_reads.py is what dvc.yaml and the flows use: the params and code each stage reads, declared once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.params import Params, load_params, params_from_dict
from kernelscope.core.stage_reads import STAGES, declared, params_for, stage_sections
from tests.support.runs import REPO

SRC = REPO / "src"
DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage.get("do", stage)  # a foreach stage keeps its definition under `do`


def _params(stage: dict) -> list[str]:
    return [key if isinstance(key, str) else next(iter(key)) for key in _body(stage).get("params", [])]


def test_every_dvc_stage_is_declared_and_every_declared_one_is_in_dvc_yaml():
    assert set(DVC_STAGES) == {name for name, reads in STAGES.items() if reads.dvc}


@pytest.mark.parametrize("name", sorted(DVC_STAGES))
def test_dvc_params_and_code_deps_are_the_declared_ones(name):
    reads, body = STAGES[name], _body(DVC_STAGES[name])
    params = _params(DVC_STAGES[name])
    assert len(params) == len(set(params)), f"dvc.yaml {name}: a params key is listed twice"
    missing, extra = sorted(set(reads.params) - set(params)), sorted(set(params) - set(reads.params))
    assert not missing and not extra, f"dvc.yaml {name}: params missing {missing}, not declared {extra}"
    code = [dep for dep in body["deps"] if dep.startswith("src/")]
    assert len(code) == len(set(code)), f"dvc.yaml {name}: a code dep is listed twice"
    missing, extra = sorted(set(reads.code) - set(code)), sorted(set(code) - set(reads.code))
    assert not missing and not extra, f"dvc.yaml {name}: code deps missing {missing}, not declared {extra}"


def _module_file(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere (top level or inside functions), with their parent packages."""
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            named |= {base, *(f"{base}.{alias.name}" for alias in node.names)}  # `from pkg import submodule`
    found = set()
    for name in named:
        parts = name.split(".")
        found |= {
            ".".join(parts[:i])
            for i in range(1, len(parts) + 1)
            if parts[0] == "kernelscope" and _module_file(".".join(parts[:i]))
        }
    return found


def _import_closure(module: str) -> set[str]:
    parts = module.split(".")
    seen: set[str] = set()
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # importing a module runs its packages' __init__
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name))
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_imports_lies_in_its_declared_code(name):
    reads = STAGES[name]
    assert _module_file(reads.module), f"{name}: module {reads.module} not found under src/"
    for dep in reads.code:
        assert (REPO / dep).exists(), f"{name}: declared code {dep} does not exist"
    files = sorted(_module_file(module).relative_to(REPO).as_posix() for module in _import_closure(reads.module))
    outside = [f for f in files if not any(f == dep or f.startswith(dep + "/") for dep in reads.code)]
    assert not outside, f"stage {name} ({reads.module}) imports code outside its declared deps: {outside}"


def _field(params: Params, key: str):
    value = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_every_declared_key_is_a_params_field():
    for name, reads in STAGES.items():
        for key in reads.reads:
            section, _, field = key.partition(".")
            assert section in Params.model_fields, f"{name}: {key!r} is no params section"
            if field:
                fields = Params.model_fields[section].annotation.model_fields
                assert field in fields, f"{name}: {key!r} is no params key"


def _covers(params: tuple[str, ...], key: str) -> bool:
    return any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in params)


def _normalized(path: str) -> str:
    return re.sub(r"\$\{item[^}]*\}", "*", path)


def test_what_a_dvc_stage_only_verifies_an_upstream_stage_lists_as_params():
    """A key a stage only checks against an input must rerun the stage that wrote that input."""
    outs = {name: [_normalized(out) for out in _body(stage)["outs"]] for name, stage in DVC_STAGES.items()}
    for name, stage in DVC_STAGES.items():
        deps = [_normalized(d) for d in _body(stage)["deps"] if d.startswith("outputs/")]
        upstream = [other for other, paths in outs.items() if any(o.startswith(d) for o in paths for d in deps)]
        given = tuple(key for other in upstream for key in STAGES[other].params)
        missing = [key for key in STAGES[name].verifies if key not in STAGES[name].params and not _covers(given, key)]
        assert not missing, f"stage {name} verifies {missing}, which no stage it depends on ({upstream}) lists"


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for key in keys for d in _differences(a.get(key), b.get(key), f"{path}.{key}".lstrip("."))]
    return [] if a == b else [f"{path}: Params() has {a!r}, params.yaml {b!r}"]


def test_the_defaults_are_params_yaml():
    project = load_params(REPO / "params.yaml")
    differing = _differences(Params().model_dump(mode="json"), project.model_dump(mode="json"))
    assert not differing, "Params() and params.yaml differ:\n" + "\n".join(differing)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_sections_round_trip_every_declared_key(name):
    params = load_params(REPO / "params.yaml")
    view = params_for(stage_sections(params, name, "digits10"), name)
    for section, fields in declared(STAGES[name].reads).items():
        for key in [section] if fields is None else [f"{section}.{field}" for field in fields]:
            assert _field(view, key) == _field(params, key), f"{name}: {key}"


def test_a_view_refuses_what_its_stage_does_not_declare(tiny_params_dict):
    params = params_from_dict(tiny_params_dict)
    view = params_for(stage_sections(params, "kernel", "digits2"), "kernel")
    assert isinstance(view, Params) and view.kernel.chunk_size == 64 and view.train.hidden == (16, 16)
    with pytest.raises(KernelscopeError, match=r"'kernel' reads kglm but does not declare it in core/stage_reads"):
        _ = view.kglm
    with pytest.raises(KernelscopeError, match=r"stage 'kernel' reads kernel\.kinds but does not declare it"):
        _ = view.kernel.kinds
    with pytest.raises(KernelscopeError, match=r"reads datasets but does not declare it"):
        view.model_dump()  # a dump reads every field
    with pytest.raises(KernelscopeError, match=r"reads kernel\.kinds"):
        view.kernel.model_dump()
    assert view.kernel.model_dump(include={"chunk_size"}) == {"chunk_size": 64}
    assert view.kernel.model_copy(update={"kinds": ("ck",)}).kinds == ("ck",)  # a value the stage set itself
    # A declared key the flow did not send is refused too, not taken from the model's default.
    sections = stage_sections(params, "kernel", "digits2")
    del sections["kernel"]["projection_dim"]
    with pytest.raises(KernelscopeError, match=r"reads kernel\.projection_dim, but its flow did not send it"):
        _ = params_for(sections, "kernel").kernel.projection_dim
    with pytest.raises(KernelscopeError, match=r"stage 'train' reads seed, but its flow did not send it"):
        _ = params_for({"train": tiny_params_dict["train"]}, "train").seed
    with pytest.raises(KernelscopeError, match=r"stage 'nope' is not in core/stage_reads\.py"):
        stage_sections(params, "nope")


def test_sources_hold_only_the_datasets_own():
    sources = {name: {"data": {"format": "npz", "path": f"{name}.npz"}} for name in ("blobs", "other")}
    params = params_from_dict({"sources": sources, "datasets": ["blobs"]})
    own = {"blobs": params.sources["blobs"].model_dump(mode="json")}
    assert stage_sections(params, "data", "blobs")["sources"] == own
    assert stage_sections(params, "data", "digits2")["sources"] == {}
    assert params_for(stage_sections(params, "data", "blobs"), "data").source("blobs").data.path == "blobs.npz"
    with pytest.raises(KernelscopeError, match=r"reads sources: pass stage_sections the dataset"):
        stage_sections(params, "data")


def _calls(path: Path, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def test_tasks_rebuild_params_through_their_stage_and_flows_build_sections_from_the_table():
    for path in sorted((REPO / "tasks").glob("*.py")):
        assert not _calls(path, "params_from_dict"), f"{path.name}: a task rebuilds params without its stage's guard"
        for call in _calls(path, "params_for"):
            stage = call.args[1]
            if isinstance(stage, ast.Constant):
                assert stage.value in STAGES, f"{path.name}: params_for names an undeclared stage {stage.value!r}"
    for path in sorted((REPO / "flows").glob("*.py")):
        for call in _calls(path, "stage_sections") + _calls(path, "forensic_sections"):
            stage = call.args[1]
            if isinstance(stage, ast.Constant):
                assert stage.value in STAGES, f"{path.name}: sections of an undeclared stage {stage.value!r}"
