"""Influence functions with EK-FAC (George et al. 2018; Grosse et al. 2023), computed by kronfluence.

kronfluence fits the eigenvalue-corrected Kronecker factors of the Gauss-Newton (true Fisher: labels
sampled from the model, seeded here) over the training set and returns, per (query, train) pair,
∇m(x)ᵀ (G + λI)⁻¹ ∇ℓ(x_j) for the measurement m the task defines. With m = −f, f = log(p_y / (1 − p_y)),
that is τ(x, x_j) = −∇f(x)ᵀ H⁻¹ ∇ℓ(x_j): the first-order change of f(x) when x_j is upweighted, in
kernelscope.counterfactual.scores's sign convention (positive: training on x_j raises f(x)).

kronfluence wraps the model's Linear and Conv2d layers in place, so it works on a copy (``plain_linear_copy``,
which also makes the NTK-parameterized layers plain Linear ones kronfluence can read); its factors go
to a temporary folder (the scores are stored by the counterfactual stage, like every attributor's).

kronfluence runs ``gc.collect()`` before each query batch's dot products. In a long-lived process (a Prefect
flow holding the server client, MLflow, matplotlib) each full collection walks every object the process holds,
about a second each and with the GIL held: 50 s of the main job went there. ``frozen_heap`` moves the objects
that exist before the call to the permanent generation while kronfluence runs, so its collections only walk
what it allocates itself.
"""

from __future__ import annotations

import copy
import gc
import logging
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kernelscope.models.heads import is_binary, margin, per_sample_loss
from kernelscope.models.zoo import ScaledLinear

FACTOR_BATCH = 256  # samples per batch while fitting the factors and scoring training points
QUERY_BATCH = 64

_FROZEN = threading.Lock()
_frozen_depth = 0  # frozen_heap calls in flight (tasks side by side in one process share the one heap)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now are left out of garbage collection until the last of these contexts exits
    (``gc.freeze``; garbage among them is collected after ``gc.unfreeze``)."""
    global _frozen_depth
    with _FROZEN:
        if _frozen_depth == 0:
            gc.freeze()
        _frozen_depth += 1
    try:
        yield
    finally:
        with _FROZEN:
            _frozen_depth -= 1
            if _frozen_depth == 0:
                gc.unfreeze()


def _sampled_labels(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(b, C_out) -> (b,) labels drawn from the model's own predictive distribution (the true Fisher)."""
    if is_binary(logits):
        return torch.bernoulli(torch.sigmoid(logits[:, 0]), generator=generator).long()
    return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)[:, 0]


class _InputScale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def plain_linear_copy(model: nn.Module) -> nn.Module:
    """A copy whose ScaledLinear layers (W (s·a) + b) are Sequential(s·, Linear) with the same W and b.

    kronfluence takes a layer's input activation from the call into it, so the scale must be applied
    before that call for its gradients to be those of W; the function and the parameters are unchanged.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ScaledLinear):
                # built on the meta device: no draw from the global generator for weights replaced at once
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, nn.Sequential(_InputScale(child.scale), plain))
    return model


def margin_task(generator: torch.Generator) -> Any:
    """The kronfluence Task of a kernelscope classifier: summed training loss, measurement −f. The Fisher's
    labels come from ``generator``, not torch's global generator (other tasks may be drawing from it in
    other threads)."""
    from kronfluence.task import Task

    class MarginTask(Task):
        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> torch.Tensor:
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    y = _sampled_labels(logits.detach(), generator)
            return per_sample_loss(logits, y).sum()

        def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
            x, y = batch
            return -margin(model(x), y).sum()

    return MarginTask()


def influence_scores(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_query: np.ndarray,
    y_query: np.ndarray,
    *,
    seed: int,
    damping: float | None = None,
    strategy: str = "ekfac",
    progress: bool = False,
) -> np.ndarray:
    """(n_query, N) float64 influence of each training point on each query's f (sign as the module says).

    ``damping`` None: kronfluence's heuristic, 0.1 × the mean eigenvalue. ``strategy``: kronfluence's
    ("ekfac", "kfac", "diagonal", or "identity": plain gradient dot products, for checks).
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    dtype = next(model.parameters()).dtype
    task = margin_task(torch.Generator().manual_seed(seed))
    prepared = prepare_model(plain_linear_copy(model).eval(), task)
    train = TensorDataset(torch.as_tensor(x_train, dtype=dtype), torch.as_tensor(y_train, dtype=torch.int64))
    query = TensorDataset(torch.as_tensor(x_query, dtype=dtype), torch.as_tensor(y_query, dtype=torch.int64))
    factor_args = FactorArguments(strategy=strategy)
    score_args = ScoreArguments(damping_factor=damping)
    with (
        frozen_heap(),
        tempfile.TemporaryDirectory(prefix="kernelscope-ekfac-") as workdir,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")  # its CUDA GradScaler call
        analyzer = Analyzer(
            "kernelscope",
            prepared,
            task,
            cpu=True,
            disable_tqdm=not progress,
            output_dir=workdir,
            log_level=logging.WARNING,
        )
        # torch's DataLoader draws each iterator's base seed from this generator (else from the global one)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(generator=torch.Generator().manual_seed(seed)))
        analyzer.fit_all_factors("factors", train, per_device_batch_size=FACTOR_BATCH, factor_args=factor_args)
        analyzer.compute_pairwise_scores(
            "scores",
            "factors",
            query_dataset=query,
            train_dataset=train,
            per_device_query_batch_size=QUERY_BATCH,
            per_device_train_batch_size=FACTOR_BATCH,
            score_args=score_args,
        )
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]  # (n_query, N)
    return scores.double().numpy()
