"""The stacked trainer: many small models trained at once, one per training subset and seed (the
counterfactual retraining engine, and the multi-seed table's seeds).

Parameters of m models are stacked along a leading axis (torch.func.stack_module_state) and one
``vmap(functional_call)`` runs every model's minibatch step together. Each model k follows exactly
the recipe of the single-model trainer (kernelscope.models.train.train_classifier) on its own
subset: initialization seeded by seeds[k], minibatch order from a generator seeded seeds[k] + 1 over
the subset in training order, the same loss and optimizer. The optimizers of torch update every
element on its own, so one optimizer over the stacked tensors is m independent optimizers. The
registry MLP under SGD (the retraining recipe) takes stacked_mlp.StackedSGD's step instead: the same
update with its backward pass written out, about twice as fast (the single-model trainer takes it too, as a
stack of one; a batched matmul of m models need not round as m single ones, so a stacked model equals its
single training to float32 rounding, not byte for byte). Models with buffers (BatchNorm in training mode)
are trained one after another, each the single training's bytes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from kernelscope.core.errors import ParamsError
from kernelscope.core.progress import Progress
from kernelscope.data.datasets import Dataset, restricted
from kernelscope.models import stacked_mlp
from kernelscope.models.heads import correct_class_logit, mean_loss, per_sample_loss
from kernelscope.models.train import TrainResult, make_optimizer, train_classifier
from kernelscope.models.zoo import architecture, build_model, entry_for_section, model_construction


@dataclass
class StackedModels:
    """m trained models of one architecture: parameters and buffers stacked on a leading axis of size m."""

    base: nn.Module  # the architecture on the meta device, in eval mode (holds no weights)
    params: dict[str, torch.Tensor]  # name -> (m, *shape)
    buffers: dict[str, torch.Tensor]
    final_losses: np.ndarray | None = None  # (m,) each model's mean loss on its last minibatch, before that step

    @property
    def count(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @torch.no_grad()
    def logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(n, d) inputs -> (m, n, C_out) float64 logits of every model."""
        xt = torch.as_tensor(x, dtype=next(iter(self.params.values())).dtype)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xb,))

        chunks = [
            vmap(one, in_dims=(0, 0, None))(self.params, self.buffers, xt[i : i + batch_size])
            for i in range(0, len(xt), batch_size)
        ]
        return torch.cat(chunks, dim=1).double().numpy()

    def margins(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(m, n) float64 correct-class margins log(p_y / (1 − p_y)) of every model on (x, y)."""
        return np.stack([correct_class_logit(z, y) for z in self.logits(x)])

    def model(self, k: int) -> nn.Module:
        """Model k as an ordinary module (CPU, eval mode)."""
        module = copy.deepcopy(self.base).to_empty(device="cpu")
        state = {name: t[k].detach().clone() for name, t in {**self.params, **self.buffers}.items()}
        module.load_state_dict(state)
        return module.eval()


def _stacked(models: list[nn.Module]) -> StackedModels:
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta").eval()
    return StackedModels(base, params, buffers)


def train_on_subsets(
    dataset: Dataset, section: Any, rows: np.ndarray, seeds: np.ndarray, progress: bool = False
) -> StackedModels:
    """One model per subset: rows (m, size) int64 training rows (sorted), seeds (m,) ints -> m trained models."""
    rows, seeds = np.asarray(rows, dtype=np.int64), [int(s) for s in np.asarray(seeds)]
    if rows.ndim != 2 or rows.shape[0] != len(seeds):
        raise ValueError(f"rows {rows.shape} and {len(seeds)} seeds do not describe the same models")
    arch = architecture(dataset, section)
    models = []
    for seed in seeds:
        with model_construction(seed):
            models.append(build_model(arch))
    if any(True for _ in models[0].buffers()):  # BatchNorm statistics: no stacked training step, train in turn
        singles = [_single(dataset, section, r, s) for r, s in zip(rows, seeds)]
        stack = _stacked([result.model for result in singles])
        return replace(stack, final_losses=np.array([result.final_loss for result in singles]))
    return _train_stacked(dataset, section, arch["name"], _stacked(models), rows, seeds, progress)


def _single(dataset: Dataset, section: Any, rows: np.ndarray, seed: int) -> TrainResult:
    mask = np.zeros(len(dataset.train.y), dtype=bool)
    mask[rows] = True
    return train_classifier(restricted(dataset, mask), section, seed, progress=False)


def _train_stacked(
    dataset: Dataset,
    section: Any,
    name: str,
    stack: StackedModels,
    rows: np.ndarray,
    seeds: list[int],
    progress: bool,
) -> StackedModels:
    base = copy.deepcopy(stack.base).train()
    if stacked_mlp.supports(base) and section.optimizer == "sgd":  # backward written out, update fused
        params = {k: v.detach().clone() for k, v in stack.params.items()}
        sgd = stacked_mlp.StackedSGD(base, params, section.lr, section.momentum)

        def step(xb: torch.Tensor, yb: torch.Tensor, last: bool) -> torch.Tensor | None:
            return sgd.step(xb, yb, with_loss=last)

    else:
        params = {k: v.detach().requires_grad_(True) for k, v in stack.params.items()}
        optimizer = make_optimizer(section, params.values())  # one optimizer over the stack: m independent ones

        def loss_of_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return mean_loss(functional_call(base, p, (xb,)), yb)

        def fast_loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            logits = stacked_mlp.forward(base, p, xb)  # (m, b, C_out)
            m, b, c = logits.shape
            return per_sample_loss(logits.reshape(m * b, c), yb.reshape(-1)).view(m, b).mean(1)

        batched_loss = fast_loss if stacked_mlp.supports(base) else vmap(loss_of_one)

        def step(xb: torch.Tensor, yb: torch.Tensor, last: bool) -> torch.Tensor | None:
            optimizer.zero_grad(set_to_none=True)
            losses = batched_loss(params, xb, yb)  # (m,)
            losses.sum().backward()  # model k's parameters get the gradient of its own mean loss
            optimizer.step()
            return losses

    x = torch.from_numpy(dataset.train.x)  # (N, d)
    y = torch.from_numpy(dataset.train.y)  # (N,)
    rows_t = torch.from_numpy(rows)  # (m, size)
    shufflers = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
    size = rows.shape[1]
    starts = range(0, size, section.batch_size)
    what = f"train {len(seeds)} {name}s on {dataset.name}" + (" subsets" if size < len(y) else "")
    with Progress(section.epochs, what, "epoch", bar=progress) as bar:
        for epoch in range(section.epochs):
            order = torch.stack([torch.randperm(size, generator=g) for g in shufflers])  # (m, size)
            picked = torch.gather(rows_t, 1, order)  # (m, size) training rows in each model's minibatch order
            for start in starts:
                idx = picked[:, start : start + section.batch_size]  # (m, b)
                losses = step(x[idx], y[idx], last=start == starts[-1])  # (m,) on the epoch's last minibatch
            assert losses is not None  # the last minibatch returns them
            _require_finite(losses, seeds, section, epoch)
            bar.update()
    final = losses.detach().double().numpy()
    return StackedModels(stack.base, {k: v.detach() for k, v in params.items()}, stack.buffers, final)


def _require_finite(losses: torch.Tensor, seeds: list[int], section: Any, epoch: int) -> None:
    losses = losses.detach()
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        field = entry_for_section(section)[1].section
        raise ParamsError(
            f"params: retraining diverged, model {k} (seed {seeds[k]}) reached loss {float(losses[k])} in epoch "
            f"{epoch + 1} with {field}.lr = {section.lr:g}; lower {field}.lr and retrain."
        )
