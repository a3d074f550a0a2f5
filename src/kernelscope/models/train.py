"""Seeded training of a classifier on a dataset split."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.data.datasets import Dataset
from kernelscope.core.errors import ArtifactError, CheckpointError, ParamsError
from kernelscope.models.zoo import build_model, log_probs, n_outputs_for
from kernelscope.core.params import CNNParams, ModelSourceParams, ResNetParams, TrainParams
from kernelscope.core.progress import Progress


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    arch: dict
    train_accuracy: float
    test_accuracy: float
    final_loss: float


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on one logit, cross-entropy on several."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y)


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """(n, d) inputs -> (n, C) float64 logits, model in eval mode."""
    model.eval()
    x = torch.as_tensor(x, dtype=next(model.parameters()).dtype)
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    pred = log_probs(torch.from_numpy(predict_logits(model, x))).argmax(1).numpy()
    return float((pred == y).mean())


def channels_first(dataset: Dataset, arch: str) -> list[int]:
    """(c, h, w) of the dataset's images: (h, w) means one channel; flat vectors cannot feed a convolution."""
    shape = list(dataset.image_shape)
    if len(shape) == 2:
        return [1, *shape]
    if len(shape) == 3:
        return shape
    raise ArtifactError(f"dataset {dataset.name!r} holds flat vectors of shape {tuple(shape)}, and the {arch} needs images; "
                        "set data.image_shape of its source to (channels, height, width), or use the mlp.")


def architecture(dataset: Dataset, params: TrainParams | CNNParams | ResNetParams) -> dict:
    """The architecture record (stored in the checkpoint sidecar) for this data and params."""
    n_out = n_outputs_for(dataset.n_classes)
    if isinstance(params, CNNParams):
        return {"name": "cnn", "image_shape": channels_first(dataset, "cnn"), "n_outputs": n_out, "channels": list(params.channels),
                "hidden": list(params.hidden), "batch_norm": params.batch_norm}
    if isinstance(params, ResNetParams):
        return {"name": "resnet", "image_shape": channels_first(dataset, "resnet"), "n_outputs": n_out, "widths": list(params.widths),
                "blocks": params.blocks}
    return {"name": "mlp", "input_dim": int(dataset.train.x.shape[1]), "hidden": list(params.hidden), "n_outputs": n_out,
            "parameterization": params.parameterization}


# Layer initialization draws from torch's global generator; seeds trained in parallel threads
# (the multi-seed table) must not interleave their draws, or the same seed gives another model.
_INIT_LOCK = threading.Lock()


def imported_classifier(dataset: Dataset, spec: ModelSourceParams) -> TrainResult:
    """A user's trained model: built by its factory, weights loaded and checked, then checked against the data."""
    from kernelscope.models.user_models import build_from_factory, load_weights

    model = load_weights(build_from_factory(spec.factory or "", spec.kwargs), spec.weights or "")
    arch = {"name": "factory", "factory": spec.factory, "kwargs": dict(spec.kwargs)}
    with torch.no_grad():
        try:
            out = model(torch.from_numpy(dataset.train.x[:4]))
        except (RuntimeError, ValueError, TypeError) as error:
            raise CheckpointError(f"{spec.factory}: the model cannot read this data's inputs, (n, {dataset.train.x.shape[1]}) float32 "
                                  f"({str(error).splitlines()[0][:120]}); accept flat inputs (e.g. start with nn.Unflatten) or fix the data's shape.") from None
    allowed = {dataset.n_classes} | ({1} if dataset.n_classes == 2 else set())
    if out.ndim != 2 or out.shape[1] not in allowed:
        raise CheckpointError(f"{spec.factory}: the model returns shape {tuple(out.shape)}, but the data has {dataset.n_classes} classes; "
                              f"it must return (n, {dataset.n_classes}) logits.")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{spec.weights}: the model's logits are not finite on the training data; check the weights and the inputs' scale.")
    return TrainResult(model=model, arch=arch, train_accuracy=accuracy(model, dataset.train.x, dataset.train.y),
                       test_accuracy=accuracy(model, dataset.test.x, dataset.test.y), final_loss=float("nan"))


_SECTIONS = {TrainParams: "train", CNNParams: "cnn", ResNetParams: "resnet"}  # where each architecture's params live in params.yaml


def train_classifier(dataset: Dataset, params: TrainParams | CNNParams | ResNetParams, seed: int, progress: bool = True) -> TrainResult:
    arch = architecture(dataset, params)
    with _INIT_LOCK, torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch)
    if params.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    x = torch.from_numpy(dataset.train.x)
    y = torch.from_numpy(dataset.train.y)
    shuffler = torch.Generator().manual_seed(seed + 1)
    loss_value = float("nan")
    with Progress(params.epochs, f"train {arch['name']} on {dataset.name}", "epoch", bar=progress) as bar:
        for epoch in range(params.epochs):
            model.train()
            order = torch.randperm(len(x), generator=shuffler)
            for start in range(0, len(x), params.batch_size):
                idx = order[start : start + params.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = classification_loss(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # diverged: stop before a checkpoint of NaN weights is written
                    section = _SECTIONS[type(params)]
                    raise ParamsError(f"params: training diverged, the loss became {loss_value} in epoch {epoch + 1} with {section}.lr = "
                                      f"{params.lr:g}; lower {section}.lr and train again.")
            bar.update()
    model.eval()
    return TrainResult(
        model=model,
        arch=arch,
        train_accuracy=accuracy(model, dataset.train.x, dataset.train.y),
        test_accuracy=accuracy(model, dataset.test.x, dataset.test.y),
        final_loss=loss_value,
    )
