"""Checkpoints: safetensors weights plus a JSON sidecar. Loading never unpickles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kernelscope import __version__
from kernelscope.errors import CheckpointError
from kernelscope.fileio import atomic_path, sha256_file, write_json_atomic
from kernelscope.models import build_model

FORMAT = "kernelscope-checkpoint/1"
WEIGHTS_NAME = "model.safetensors"
SIDECAR_NAME = "model.json"


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    meta: dict[str, Any]

    @property
    def checkpoint_hash(self) -> str:
        return str(self.meta["weights_sha256"])


def save_checkpoint(model: nn.Module, out_dir: str | Path, *, arch: dict, hyperparameters: dict, dataset_name: str,
                    dataset_hash: str, metrics: dict[str, float], seed: int) -> dict[str, Any]:
    """Write model.safetensors, then model.json naming its sha256; return the sidecar record."""
    out_dir = Path(out_dir)
    weights_path = out_dir / WEIGHTS_NAME
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "architecture": arch,
        "hyperparameters": hyperparameters,
        "seed": seed,
        "dataset": {"name": dataset_name, "hash": dataset_hash},
        "metrics": metrics,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": sha256_file(weights_path),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "kernelscope_version": __version__,
        "torch_version": torch.__version__,
    }
    write_json_atomic(out_dir / SIDECAR_NAME, meta)
    return meta


def load_checkpoint(ckpt_dir: str | Path, expected_dataset_hash: str | None = None) -> Checkpoint:
    """Load a checkpoint folder; every refusal is one sentence naming the file and the mismatch."""
    ckpt_dir = Path(ckpt_dir)
    sidecar = ckpt_dir / SIDECAR_NAME
    weights = ckpt_dir / WEIGHTS_NAME
    if not sidecar.is_file():
        raise CheckpointError(f"{sidecar}: checkpoint sidecar not found; train a model first (kernelscope train) or point at a checkpoint folder.")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{sidecar}: sidecar is not valid JSON ({error.__class__.__name__}); retrain or restore the checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar}: field 'format' is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}; this is not a kernelscope checkpoint.")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found beside its sidecar; retrain or restore the checkpoint.")
    actual = sha256_file(weights)
    if actual != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights}: sha256 {actual[:12]}… does not match 'weights_sha256' in {sidecar.name}; the weights are corrupt or were replaced, retrain.")
    if expected_dataset_hash is not None and meta.get("dataset", {}).get("hash") != expected_dataset_hash:
        raise CheckpointError(
            f"{sidecar}: field 'dataset.hash' is {str(meta.get('dataset', {}).get('hash'))[:12]}…, but the data given has hash "
            f"{expected_dataset_hash[:12]}…; retrain on this data or pass the matching dataset."
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error}); retrain or restore the checkpoint.") from None
    try:
        model = build_model(meta["architecture"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{sidecar}: field 'architecture' is incomplete or invalid ({error!r}); retrain the checkpoint.") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{weights}: tensors do not match the architecture in {sidecar.name} (missing {missing[:3]}, unexpected {extra[:3]}).")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{weights}: tensor '{name}' has shape {tuple(state[name].shape)} but the architecture in {sidecar.name} expects {tuple(tensor.shape)}."
            )
    model.load_state_dict(state)
    model.to(next(t.dtype for t in state.values() if t.is_floating_point())).eval()
    return Checkpoint(model=model, meta=meta)
