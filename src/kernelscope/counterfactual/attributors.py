"""Attributors behind one interface: a name, and a function from a trained run to (query, train) scores.

Names: ``trak``, ``tracin``, ``grad_dot``, ``grad_cos``, ``ekfac`` (kronfluence), and per kernel kind
``kglm:<kind>`` (the NTK paper's Eq. 3) and ``kernel:<kind>`` (similarity signed by label agreement). Scores follow
kernelscope.counterfactual.scores's sign convention; queries are the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from kernelscope.core.errors import KernelscopeError, ParamsError
from kernelscope.core.layout import RunLayout
from kernelscope.core.param_types import GRADIENT_ATTRIBUTORS, attributor_names
from kernelscope.core.params import Params
from kernelscope.core.provenance import kglm_provenance, training_section
from kernelscope.counterfactual import scores
from kernelscope.counterfactual.cost import measured
from kernelscope.counterfactual.gradients import MarginGradients, margin_gradients
from kernelscope.data.datasets import Dataset
from kernelscope.kernels.projection import Projector
from kernelscope.models.checkpoint import Checkpoint
from kernelscope.models.stacked_training import train_on_subsets
from kernelscope.models.train import train_classifier
from kernelscope.surrogate.kglm import KGLM


@dataclass(frozen=True)
class Run:
    """What an attributor reads: the run's params, where its artifacts are, its verified data and model."""

    params: Params
    layout: RunLayout
    dataset: Dataset
    checkpoint: Checkpoint

    def projector(self) -> Projector | None:
        cf = self.params.counterfactual
        if cf.projection_dim is None:
            return None
        kernel = self.params.kernel
        return Projector(cf.projection_dim, self.params.seed, kernel.projection, kernel.memory_budget_mb)

    def kernel_rows(self, kind: str) -> np.ndarray:
        """(n_test, N) verified kernel of the run's test points against its training points, float64; from a top-k
        kernel (kernel.storage: topk) the entries not stored are 0, as in the kGLM fit on it."""
        from kernelscope.kernels.stages import read_run_kernel
        from kernelscope.kernels.topk import dense_rows

        ds, ckpt = self.dataset, self.checkpoint
        values, _ = read_run_kernel(self.params, self.layout, ds, ckpt.checkpoint_hash, kind, "test", ds.test.ids)
        return dense_rows(values)

    def kglm(self, kind: str) -> KGLM:
        """The run's verified kGLM on the kind's kernel."""
        from kernelscope.surrogate.kglm import load_kglm

        return load_kglm(
            self.layout.kglm_dir(kind) / "kglm.safetensors",
            expect=kglm_provenance(self.params, kind, self.checkpoint.checkpoint_hash, self.dataset.dataset_hash),
        )

    def tracin_checkpoints(self) -> list[tuple[float, nn.Module]]:
        """(η_t, θ_t) every counterfactual.tracin_every epochs of the model's training (replayed)."""
        return replay_tracin_checkpoints(self)

    def gradients(self, model: nn.Module, projector: Projector | None) -> tuple[MarginGradients, MarginGradients]:
        """(test, train) margin gradients of a model."""
        ds = self.dataset
        return (
            margin_gradients(model, ds.test.x, ds.test.y, projector),
            margin_gradients(model, ds.train.x, ds.train.y, projector),
        )


@dataclass(frozen=True)
class Scores:
    name: str
    values: np.ndarray  # (n_test, N) float64
    seconds: float
    peak_mb: float


def check_attributor(name: str, field: str = "counterfactual.attributors") -> str:
    if name not in attributor_names():
        raise ParamsError(
            f"{field}: {name!r} is not an attributor; choose from {', '.join(GRADIENT_ATTRIBUTORS)}, "
            "kglm:<kind> or kernel:<kind> with a kernel kind (e.g. kglm:trntk)."
        )
    return name


def attribute(run: Run, name: str) -> Scores:
    """Scores of one attributor on the run's test points, with the time and memory it took."""
    check_attributor(name)
    family, _, kind = name.partition(":")
    compute: Callable[[Run, str], np.ndarray] = _FAMILIES[family]
    with measured() as cost:
        values = compute(run, kind)
    if not np.isfinite(values).all():
        raise KernelscopeError(
            f"{name}: {int((~np.isfinite(values)).sum())} attribution scores are NaN or inf; "
            f"check the checkpoint in {run.layout.model_dir} (its weights or gradients are not finite)."
        )
    return Scores(name, values, cost.seconds, cost.peak_mb)


def _grad_dot(run: Run, _: str) -> np.ndarray:
    test, train = run.gradients(run.checkpoint.model, run.projector())
    return scores.grad_dot(test.g, train.g, train.loss_scale)


def _grad_cos(run: Run, _: str) -> np.ndarray:
    test, train = run.gradients(run.checkpoint.model, run.projector())
    return scores.grad_cos(test.g, train.g)


def trak_models(run: Run) -> list[nn.Module]:
    """The run's model and counterfactual.trak_models − 1 more trained on all the data with seeds seed + 1, ...."""
    extra = run.params.counterfactual.trak_models - 1
    models = [run.checkpoint.model]
    if extra > 0:
        _, section = training_section(run.params, run.dataset.name)
        everything = np.tile(np.arange(len(run.dataset.train.y)), (extra, 1))
        stack = train_on_subsets(run.dataset, section, everything, run.params.seed + 1 + np.arange(extra))
        models += [stack.model(k) for k in range(extra)]
    return models


def _trak(run: Run, _: str) -> np.ndarray:
    projector = run.projector()
    per_model = []
    for model in trak_models(run):
        test, train = run.gradients(model, projector)
        per_model.append((test.g, train.g, train.loss_scale))
    return scores.trak(per_model, run.params.counterfactual.trak_lambda)


class TracInKeeper:
    """An ``after_epoch`` hook of train_classifier: keeps (η, θ) every ``every`` epochs and after the last."""

    def __init__(self, section: Any, every: int) -> None:
        self.section, self.every = section, every
        self.kept: list[tuple[float, nn.Module]] = []

    def __call__(self, epoch: int, model: nn.Module) -> None:
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.section.epochs:
            self.kept.append((float(self.section.lr), _frozen_copy(model)))


def replay_tracin_checkpoints(run: Run) -> list[tuple[float, nn.Module]]:
    """(η_t, θ_t) every counterfactual.tracin_every epochs, replaying the run's training (seeded, so the last
    replayed model must be the checkpoint's; a replay that differs is refused)."""
    _, section = training_section(run.params, run.dataset.name)
    keep = TracInKeeper(section, run.params.counterfactual.tracin_every)
    final = train_classifier(run.dataset, section, run.params.seed, progress=False, after_epoch=keep).model
    saved = run.checkpoint.model.state_dict()
    drift = max(float((value - saved[key]).abs().max()) for key, value in final.state_dict().items())
    if drift > 1e-4:
        raise KernelscopeError(
            f"{run.layout.model_dir}: replaying its training for TracIn gave other weights (largest difference "
            f"{drift:.3g}); the checkpoint was not trained by this params file's recipe, retrain it."
        )
    return keep.kept


def _frozen_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


def _tracin(run: Run, _: str) -> np.ndarray:
    projector = run.projector()
    terms = []
    for lr, model in run.tracin_checkpoints():
        test, train = run.gradients(model, projector)
        terms.append((lr, test.g, test.loss_scale, train.g, train.loss_scale))
    return scores.tracin(terms)


def attributor_inputs(layout: RunLayout, name: str) -> list[Path]:
    """The files an attributor reads besides the data and the checkpoint (a flow task's key hashes them)."""
    family, _, kind = name.partition(":")
    files = [layout.kernel_path(kind, "test")] if kind else []
    return files + ([layout.kglm_dir(kind) / "kglm.safetensors"] if family == "kglm" else [])


def _kernel(run: Run, kind: str) -> np.ndarray:
    return scores.label_signed_kernel(run.kernel_rows(kind), run.dataset.test.y, run.dataset.train.y)


def _kglm(run: Run, kind: str) -> np.ndarray:
    return scores.kglm_to_query_class(run.kglm(kind), run.kernel_rows(kind), run.dataset.test.y)


def _ekfac(run: Run, _: str) -> np.ndarray:
    from kernelscope.counterfactual.ekfac import influence_scores

    ds = run.dataset
    return influence_scores(
        run.checkpoint.model,
        ds.train.x,
        ds.train.y,
        ds.test.x,
        ds.test.y,
        seed=run.params.seed,
        damping=run.params.counterfactual.ekfac_damping,
    )


_FAMILIES: dict[str, Callable[[Run, str], Any]] = {
    "trak": _trak,
    "tracin": _tracin,
    "grad_dot": _grad_dot,
    "grad_cos": _grad_cos,
    "ekfac": _ekfac,
    "kglm": _kglm,
    "kernel": _kernel,
}
