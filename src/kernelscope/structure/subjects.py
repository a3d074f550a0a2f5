"""The models the structure probes examine (a dataset's run or the multitask model), loaded with a seeded
sample of their training points, and where each subject's artifacts go."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from kernelscope.core.params import Params
from kernelscope.core.provenance import multitask_spec, run_model
from kernelscope.core.results import StageResult
from kernelscope.models.checkpoint import load_checkpoint
from kernelscope.structure.layers import check_layers, default_layers


def one_blas_thread(stage: Callable[..., StageResult]) -> Callable[..., StageResult]:
    """Run a stage with numpy's BLAS on one thread: its batched small eigen-problems gain nothing from
    more, and BLAS threads next to torch's spinning OpenMP threads made them up to 60× slower on 2 cores."""

    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any) -> StageResult:
        with threadpool_limits(limits=1, user_api="blas"):
            return stage(*args, **kwargs)

    return run


@dataclass
class Subject:
    """A checkpoint and its data, as the structure probes see them."""

    name: str
    model: nn.Module
    checkpoint_hash: str
    x_fit: torch.Tensor  # (points, ...) seeded sample of the training split
    fit_ids: np.ndarray
    x_eval: torch.Tensor  # the test split
    y_eval: torch.Tensor
    root: Path  # the run folder: <root>/structure/ gets the artifacts, <root>/loss_kernel/ may hold an SGLD run
    layers: list[str]


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


def load_subject(params: Params, name: str, outputs: str | Path) -> Subject:
    """The attribution run's MLP and data of a digits dataset, or the multitask modular model."""
    sp = params.structure
    if name == "multitask":
        from kernelscope.loss_kernel.multitask import make_multitask_data

        mp = params.multitask
        root = Path(outputs) / "multitask"
        data = make_multitask_data(mp.p, mp.train_fraction, params.seed)
        ckpt = load_checkpoint(root / "model", multitask_spec(params))
        pick = data.train[_sample(len(data.train), sp.points, params.seed)]
        x_fit, fit_ids = torch.from_numpy(data.x[pick]), pick
        x_eval, y_eval = torch.from_numpy(data.x[data.test]), torch.from_numpy(data.y[data.test])
    else:
        from kernelscope.core.layout import RunLayout

        layout = RunLayout.at(outputs, name)
        ds, ckpt = run_model(params, layout)
        root = layout.root
        dtype = next(ckpt.model.parameters()).dtype
        pick = _sample(len(ds.train.y), sp.points, params.seed)
        x_fit, fit_ids = torch.from_numpy(ds.train.x[pick]).to(dtype), ds.train.ids[pick]
        x_eval, y_eval = torch.from_numpy(ds.test.x).to(dtype), torch.from_numpy(ds.test.y)
    model = ckpt.model.eval()
    layers = list(sp.layers.get(name) or default_layers(model, x_fit))
    check_layers(model, x_fit, layers, source=f"params.yaml: structure.layers.{name}")
    return Subject(name, model, ckpt.checkpoint_hash, x_fit, np.asarray(fit_ids), x_eval, y_eval, root, layers)


def out_dir(subject: Subject) -> Path:
    return subject.root / "structure"
