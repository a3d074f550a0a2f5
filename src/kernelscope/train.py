"""Seeded training of a classifier on a dataset split."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from kernelscope.progress import Progress

from kernelscope.data import Dataset
from kernelscope.models import build_model, log_probs, n_outputs_for
from kernelscope.params import CNNParams, TrainParams


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


def architecture(dataset: Dataset, params: TrainParams | CNNParams) -> dict:
    """The architecture record (stored in the checkpoint sidecar) for this data and params."""
    n_out = n_outputs_for(dataset.n_classes)
    if isinstance(params, CNNParams):
        return {"name": "cnn", "image_shape": [1, *dataset.image_shape], "n_outputs": n_out, "channels": list(params.channels),
                "hidden": list(params.hidden), "batch_norm": params.batch_norm}
    return {"name": "mlp", "input_dim": int(dataset.train.x.shape[1]), "hidden": list(params.hidden), "n_outputs": n_out,
            "parameterization": params.parameterization}


# Layer initialization draws from torch's global generator; seeds trained in parallel threads
# (the multi-seed table) must not interleave their draws, or the same seed gives another model.
_INIT_LOCK = threading.Lock()


def train_classifier(dataset: Dataset, params: TrainParams | CNNParams, seed: int, progress: bool = True) -> TrainResult:
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
        for _ in range(params.epochs):
            model.train()
            order = torch.randperm(len(x), generator=shuffler)
            for start in range(0, len(x), params.batch_size):
                idx = order[start : start + params.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = classification_loss(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
                loss_value = loss.item()
            bar.update()
    model.eval()
    return TrainResult(
        model=model,
        arch=arch,
        train_accuracy=accuracy(model, dataset.train.x, dataset.train.y),
        test_accuracy=accuracy(model, dataset.test.x, dataset.test.y),
        final_loss=loss_value,
    )
