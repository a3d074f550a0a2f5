"""Checkpoints: safetensors weights plus a JSON sidecar, both verified artifacts. Loading never unpickles.

The model a checkpoint is loaded into is built from a ``ModelSpec`` that the caller derives from
params (kernelscope.core.provenance.model_spec), never from the sidecar: a sidecar only records what it
was trained as, and any difference from what params ask for is refused. So no file on disk can
choose a factory, an import path or a size to allocate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernelscope import __version__
from kernelscope.core.artifacts import canonical_json, shown
from kernelscope.core.errors import ArtifactError, CheckpointError
from kernelscope.core.fileio import sha256_file
from kernelscope.core.json_artifacts import read_json_artifact, write_json_artifact
from kernelscope.core.tensor_artifacts import read_safetensors, write_safetensors
from kernelscope.models.zoo import model_construction

FORMAT = "kernelscope-checkpoint/2"
WEIGHTS_NAME = "model.safetensors"
SIDECAR_NAME = "model.json"
# Largest registry model a checkpoint may ask for: 2^30 parameters (4 GiB as float32). Params bound each
# width; this bounds their product before anything is allocated.
MAX_PARAMETERS = 1 << 30


@dataclass(frozen=True)
class ModelSpec:
    """What params say the checkpoint must be: the architecture record, the training settings, seed and data.

    ``build`` makes the untrained model; it comes from params (a registry builder, or the user's own
    factory named in params.yaml), never from a file.
    """

    architecture: dict[str, Any]
    hyperparameters: dict[str, Any]
    seed: int
    dataset_hash: str
    build: Callable[[], nn.Module] = field(compare=False, repr=False)
    bounded: bool = True  # registry models: count parameters on the meta device before allocating


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    meta: dict[str, Any]

    @property
    def checkpoint_hash(self) -> str:
        return str(self.meta["weights_sha256"])


def save_checkpoint(
    model: nn.Module, out_dir: str | Path, spec: ModelSpec, *, dataset_name: str, metrics: dict[str, float]
) -> dict[str, Any]:
    """Write model.safetensors, then model.json naming its sha256; return the sidecar record."""
    out_dir = Path(out_dir)
    weights_path = out_dir / WEIGHTS_NAME
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    write_safetensors(
        weights_path,
        state,
        "checkpoint-weights",
        {"architecture": spec.architecture, "dataset_hash": spec.dataset_hash},
    )
    meta = {
        "format": FORMAT,
        "architecture": spec.architecture,
        "hyperparameters": spec.hyperparameters,
        "seed": spec.seed,
        "dataset": {"name": dataset_name, "hash": spec.dataset_hash},
        "metrics": metrics,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": sha256_file(weights_path),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "kernelscope_version": __version__,
        "torch_version": torch.__version__,
    }
    return write_json_artifact(out_dir / SIDECAR_NAME, meta, "checkpoint-sidecar")


def read_sidecar(ckpt_dir: str | Path) -> dict[str, Any]:
    """The verified sidecar record (without loading the weights)."""
    sidecar = Path(ckpt_dir) / SIDECAR_NAME
    if not sidecar.is_file():
        raise CheckpointError(
            f"{sidecar}: checkpoint sidecar not found; "
            "train a model first (kernelscope train) or point at a checkpoint folder."
        )
    try:
        meta = read_json_artifact(sidecar, "checkpoint-sidecar")
    except ArtifactError as error:
        raise CheckpointError(str(error)) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{sidecar}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}; "
            "retrain the checkpoint (kernelscope train)."
        )
    return meta


def _require_same(sidecar: Path, field_name: str, stored: Any, wanted: Any, fix: str) -> None:
    if canonical_json(stored) != canonical_json(wanted):
        raise CheckpointError(
            f"{sidecar}: field '{field_name}' is {shown(stored)} but params ask for {shown(wanted)}; {fix}."
        )


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the spec's model, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = spec.build()
    return sum(p.numel() for p in model.parameters())


def build_bounded(spec: ModelSpec, where: str) -> nn.Module:
    """The spec's untrained model, refused before allocation when it exceeds MAX_PARAMETERS."""
    if spec.bounded:
        count = parameter_count(spec)
        if count > MAX_PARAMETERS:
            raise CheckpointError(
                f"{where}: the architecture asks for {count:,} parameters, more than the limit of {MAX_PARAMETERS:,}; "
                "use smaller widths in params.yaml."
            )
    with model_construction():  # its initial weights are overwritten, but drawing them must not race a seeded init
        return spec.build()


def load_checkpoint(ckpt_dir: str | Path, spec: ModelSpec) -> Checkpoint:
    """Load a checkpoint folder into the model ``spec`` describes; every refusal is one sentence naming the file
    and field.
    """
    ckpt_dir = Path(ckpt_dir)
    sidecar, weights = ckpt_dir / SIDECAR_NAME, ckpt_dir / WEIGHTS_NAME
    meta = read_sidecar(ckpt_dir)
    retrain = "retrain with these params (kernelscope train) or restore the params it was trained with"
    _require_same(sidecar, "architecture", meta.get("architecture"), spec.architecture, retrain)
    _require_same(sidecar, "hyperparameters", meta.get("hyperparameters"), spec.hyperparameters, retrain)
    _require_same(sidecar, "seed", meta.get("seed"), spec.seed, retrain)
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    if dataset.get("hash") != spec.dataset_hash:
        raise CheckpointError(
            f"{sidecar}: field 'dataset.hash' is {str(dataset.get('hash'))[:12]}…, but the data given has hash "
            f"{spec.dataset_hash[:12]}…; retrain on this data or pass the matching dataset."
        )
    model = build_bounded(spec, str(sidecar))  # from params, bounded before anything is allocated
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: weights file not found beside its sidecar; retrain or restore the checkpoint."
        )
    actual = sha256_file(weights)
    if actual != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {actual[:12]}… does not match 'weights_sha256' in {sidecar.name}; "
            "the weights are corrupt or were replaced, retrain."
        )
    try:
        arrays, _ = read_safetensors(
            weights, "checkpoint-weights", {"architecture": spec.architecture, "dataset_hash": spec.dataset_hash}
        )
    except ArtifactError as error:
        raise CheckpointError(str(error)) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{weights}: tensors do not match the architecture in params "
            f"(missing {missing[:3]}, unexpected {extra[:3]}); retrain."
        )
    state = {name: torch.from_numpy(arrays[name].copy()) for name in expected}
    for name, tensor in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{weights}: tensor '{name}' has shape {tuple(got.shape)} "
                f"but the architecture in params expects {tuple(tensor.shape)}; retrain."
            )
        if got.is_floating_point() != tensor.is_floating_point():
            raise CheckpointError(
                f"{weights}: tensor '{name}' is {got.dtype} but the model's is {tensor.dtype}; "
                "the weights were replaced, retrain."
            )
    model.load_state_dict(state)
    model.to(next(t.dtype for t in state.values() if t.is_floating_point())).eval()
    return Checkpoint(model=model, meta=meta)


def require_finite_weights(ckpt: Any, model_dir: Path) -> None:
    """Refuse a checkpoint with NaN or inf parameters: every kernel, kGLM fit and metric from it would be NaN."""
    for name, tensor in ckpt.model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{model_dir / 'model.safetensors'}: tensor '{name}' holds {bad} non-finite (NaN or inf) weights; "
                "the model diverged in training, retrain it (e.g. with a lower train.lr) or restore a good checkpoint."
            )
