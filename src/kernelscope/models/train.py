"""Seeded training of a classifier on a dataset split."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from kernelscope.core.errors import CheckpointError, ParamsError
from kernelscope.core.param_sources import ModelSourceParams
from kernelscope.core.progress import Progress
from kernelscope.data.datasets import Dataset
from kernelscope.models import stacked_mlp
from kernelscope.models.heads import accepted_outputs, mean_loss, predictions
from kernelscope.models.zoo import architecture, build_model, entry_for_section, model_construction


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    arch: dict
    train_accuracy: float
    test_accuracy: float
    final_loss: float


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """(n, d) inputs -> (n, C) float64 logits, model in eval mode."""
    model.eval()
    x = torch.as_tensor(x, dtype=next(model.parameters()).dtype)
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    pred = predictions(predict_logits(model, x))
    return float((pred == y).mean())


# Layer initialization draws from torch's global generator; seeds trained in parallel threads
# (the multi-seed table) must not interleave their draws, or the same seed gives another model.


def imported_classifier(dataset: Dataset, spec: ModelSourceParams) -> TrainResult:
    """A user's trained model: built by its factory, weights loaded and checked, then checked against the data."""
    from kernelscope.models.user_models import build_from_factory, load_weights

    model = load_weights(build_from_factory(spec.factory or "", spec.kwargs), spec.weights or "")
    arch = {"name": "factory", "factory": spec.factory, "kwargs": dict(spec.kwargs)}
    with torch.no_grad():
        try:
            out = model(torch.from_numpy(dataset.train.x[:4]))
        except (RuntimeError, ValueError, TypeError) as error:
            raise CheckpointError(
                f"{spec.factory}: the model cannot read this data's inputs, (n, {dataset.train.x.shape[1]}) float32 "
                f"({str(error).splitlines()[0][:120]}); "
                "accept flat inputs (e.g. start with nn.Unflatten) or fix the data's shape."
            ) from None
    if out.ndim != 2 or out.shape[1] not in accepted_outputs(dataset.n_classes):
        raise CheckpointError(
            f"{spec.factory}: the model returns shape {tuple(out.shape)}, "
            f"but the data has {dataset.n_classes} classes; "
            f"it must return (n, {dataset.n_classes}) logits."
        )
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{spec.weights}: the model's logits are not finite on the training data; "
            "check the weights and the inputs' scale."
        )
    return TrainResult(
        model=model,
        arch=arch,
        train_accuracy=accuracy(model, dataset.train.x, dataset.train.y),
        test_accuracy=accuracy(model, dataset.test.x, dataset.test.y),
        final_loss=float("nan"),
    )


def make_optimizer(params: Any, parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The section's optimizer (sgd with momentum, or adam) over these tensors (stacked ones too: both are
    elementwise)."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=params.momentum)
    return torch.optim.Adam(parameters, lr=params.lr)


Step = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor | None]


def _step_function(model: nn.Module, params: Any) -> Step:
    """One minibatch step, (x, y, last) -> the mean loss before the step when ``last`` (else maybe None).

    The registry MLP under SGD takes the written-out step of stacked_mlp (a stack of one model, its
    tensors views of the module's parameters): the same update, about 1.6x faster than autograd and
    torch.optim on these small layers. Everything else: autograd and the section's torch optimizer."""
    if stacked_mlp.supports(model) and params.optimizer == "sgd":
        views = {name: p.detach().unsqueeze(0) for name, p in model.named_parameters()}  # (1, *shape), shared
        sgd = stacked_mlp.StackedSGD(model, views, params.lr, params.momentum)

        def written_out(xb: torch.Tensor, yb: torch.Tensor, last: bool) -> torch.Tensor | None:
            losses = sgd.step(xb.unsqueeze(0), yb.unsqueeze(0), with_loss=last)  # (1,) or None
            return None if losses is None else losses[0]

        return written_out
    optimizer = make_optimizer(params, model.parameters())

    def autograd(xb: torch.Tensor, yb: torch.Tensor, last: bool) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = mean_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return autograd


def train_classifier(
    dataset: Dataset,
    params: Any,
    seed: int,
    progress: bool = True,
    after_epoch: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train the registry architecture (kernelscope.models.zoo.MODELS) whose params section ``params`` is.

    ``after_epoch(epoch, model)`` is called after every epoch (TracIn keeps checkpoints with it)."""
    arch = architecture(dataset, params)
    with model_construction(seed):
        model = build_model(arch)
    step = _step_function(model, params)
    x = torch.from_numpy(dataset.train.x)
    y = torch.from_numpy(dataset.train.y)
    shuffler = torch.Generator().manual_seed(seed + 1)
    loss_value = float("nan")
    starts = range(0, len(x), params.batch_size)
    with Progress(params.epochs, f"train {arch['name']} on {dataset.name}", "epoch", bar=progress) as bar:
        for epoch in range(params.epochs):
            model.train()
            order = torch.randperm(len(x), generator=shuffler)
            for start in starts:
                idx = order[start : start + params.batch_size]
                loss = step(x[idx], y[idx], start == starts[-1])
            assert loss is not None  # the epoch's last minibatch returns it
            loss_value = float(loss)
            if not math.isfinite(loss_value):  # diverged: stop before a checkpoint of NaN weights is written
                section = entry_for_section(params)[1].section
                raise ParamsError(
                    f"params: training diverged, the loss became {loss_value} in epoch {epoch + 1} "
                    f"with {section}.lr = "
                    f"{params.lr:g}; lower {section}.lr and train again."
                )
            if after_epoch is not None:
                after_epoch(epoch, model)
            bar.update()
    model.eval()
    return TrainResult(
        model=model,
        arch=arch,
        train_accuracy=accuracy(model, dataset.train.x, dataset.train.y),
        test_accuracy=accuracy(model, dataset.test.x, dataset.test.y),
        final_loss=loss_value,
    )
