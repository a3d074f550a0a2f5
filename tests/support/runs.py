"""The tiny runs the tests share: TINY_PARAMS, and one factory that builds a run once per session.

``tiny_run(stages, **overrides)`` (the fixture in tests/conftest.py) runs the named stages in process on
TINY_PARAMS deep-merged with ``overrides`` (one dict per params section, e.g. ``kernel={"kinds": [...]}``),
the first time a (stages, overrides) pair is asked for, into a session temporary folder; every call hands
back a private copy, so a test that damages files never disturbs another one.

A run folder is what the CLI makes: ``params.yaml`` beside ``out/<dataset>/{data,model,kernels,kglm,...}``,
so ``kernelscope <command> --params ROOT/params.yaml --out ROOT/out`` continues it.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[2]

TINY_PARAMS: dict[str, Any] = {
    "seed": 3,
    "device": "cpu",
    "datasets": ["digits2"],
    "data": {"test_fraction": 0.3},
    "train": {
        "arch": "mlp",
        "hidden": [16, 16],
        "parameterization": "ntk",
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.0,
        "batch_size": 16,
        "epochs": 15,
    },
    "kernel": {
        "kinds": ["trntk"],
        "chunk_size": 64,
        "memory_budget_mb": 64,
        "projection_dim": 256,
        "projection": "kron_hadamard",
        "em_layers": None,
    },
    "kglm": {"alpha": 1e-3, "max_iter": 200, "tol": 1e-3},
    "scale": {"runner": "sequential"},  # params.yaml's threads would spread the tests' tasks over threads
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``overrides`` merged in: dicts key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class TinyRun:
    """One run folder: ``root/params.yaml`` (``raw``, as written) and ``root/out/<dataset>``."""

    root: Path
    raw: dict[str, Any]

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def dataset(self) -> str:
        return str(self.raw["datasets"][0])

    @property
    def layout(self) -> RunLayout:
        return RunLayout.at(self.out, self.dataset)

    @property
    def params(self) -> Params:
        return load_params(self.params_file)

    def params_with(self, **sections: Any) -> Params:
        """These params with more sections merged in (for a stage the run has not run; params.yaml is left alone)."""
        return params_from_dict(merged(self.raw, sections))

    def copy(self, dest: Path) -> TinyRun:
        shutil.copytree(self.root, dest)
        return TinyRun(Path(dest), copy.deepcopy(self.raw))


def _data(params: Params, layout: RunLayout) -> None:
    from kernelscope.data.stages import data_stage

    data_stage(params, layout.root.name, layout)  # RunLayout.at(out, dataset): the folder is named after the dataset


def _train(params: Params, layout: RunLayout) -> None:
    from kernelscope.models.stages import train_stage

    train_stage(params, layout, progress=False)


def _kernel(params: Params, layout: RunLayout) -> None:
    """`kernelscope kernel`: every kind of kernel.kinds."""
    from kernelscope.kernels.stages import kernel_stage

    for kind in params.kernel.kinds:
        kernel_stage(params, layout, kind, progress=False)


def _kglm(params: Params, layout: RunLayout) -> None:
    """`kernelscope kglm --no-track`: fit and evaluate every kind, then the comparison."""
    from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage

    summaries = []
    for kind in params.kernel.kinds:
        fit_kglm_stage(params, layout, kind)
        summaries.append(evaluate_stage(params, layout, kind).summary)
    compare_stage(params, layout, summaries)


# The stages tiny_run can run, in their order; each as its CLI command runs it.
STAGES: dict[str, Callable[[Params, RunLayout], None]] = {
    "data": _data,
    "train": _train,
    "kernel": _kernel,
    "kglm": _kglm,
}


def build_tiny_run(root: Path, stages: Sequence[str], overrides: dict[str, Any]) -> TinyRun:
    """Write params.yaml under ``root`` and run ``stages`` (in the order of STAGES) on it."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown or list(stages) != [s for s in STAGES if s in stages]:
        raise ValueError(f"tiny_run stages {list(stages)}: each must be one of {list(STAGES)}, in that order")
    run = TinyRun(Path(root), merged(TINY_PARAMS, overrides))
    run.root.mkdir(parents=True, exist_ok=True)
    run.params_file.write_text(yaml.safe_dump(run.raw, sort_keys=False))
    params, layout = run.params, run.layout
    for stage in stages:
        STAGES[stage](params, layout)
    return run


class TinyRuns:
    """The session's cache: one built run per distinct (stages, overrides) under ``root``."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._built: dict[tuple[tuple[str, ...], str], TinyRun] = {}

    def copy(self, stages: Sequence[str], overrides: dict[str, Any], dest: Path) -> TinyRun:
        key = (tuple(stages), json.dumps(overrides, sort_keys=True))
        if key not in self._built:
            self._built[key] = build_tiny_run(self._root / f"run-{len(self._built)}", stages, overrides)
        return self._built[key].copy(dest)
