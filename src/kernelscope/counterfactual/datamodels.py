"""Retrained outputs on subsets (the datamodel ground truth), cached per block of models as verified files.

Block b holds models b·s .. b·s + s − 1 (s = counterfactual.models_per_stack): their subset masks and the
correct-class margin of every test point. A block is reused only when its provenance (data, training
recipe, subset draw) is this run's; a block from other data or params is refused, never mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.artifact_errors import mismatch_error
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import sha256_json
from kernelscope.core.params import Params
from kernelscope.core.progress import Progress
from kernelscope.core.provenance import training_section
from kernelscope.core.tensor_artifacts import read_safetensors, write_safetensors
from kernelscope.counterfactual.subsets import subset_rows, subset_size
from kernelscope.data.datasets import Dataset
from kernelscope.models.stacked_training import train_on_subsets

ARTIFACT = "retrained-outputs"
SEED_OFFSET = 1000  # model k of the datamodel retrainings has seed (seed + 1000 + k); TRAK's extra models seed + 1..


@dataclass(frozen=True)
class Datamodels:
    masks: np.ndarray  # (m, N) bool: subset k's training points
    outputs: np.ndarray  # (m, n_test) float64: f(x; θ(S_k)), the correct-class margin
    paths: list[Path]


def block_provenance(params: Params, ds: Dataset, block: int) -> dict[str, Any]:
    cf = params.counterfactual
    arch, section = training_section(params, ds.name)
    first = block * cf.models_per_stack
    return {
        "dataset_hash": ds.dataset_hash,
        "arch": arch,
        "training": section.model_dump(mode="json"),
        "seed": params.seed,
        "alpha": cf.alpha,
        "m": cf.m,
        "models_per_stack": cf.models_per_stack,
        "block": block,
        "models": [first, min(first + cf.models_per_stack, cf.m)],
        "target": "correct-class margin log(p_y / (1 - p_y)) on the test split",
        "subsets": "numpy default_rng([seed, 0x5EB5E7, k]).choice(N, round(alpha N)), sorted",
    }


def block_path(out_dir: Path, params: Params, ds: Dataset, block: int) -> Path:
    """out_dir/<key>/block-NNNN.safetensors; the key hashes everything a block depends on but its index, so
    other params start another folder instead of meeting blocks they would have to refuse."""
    key = {k: v for k, v in block_provenance(params, ds, 0).items() if k not in ("block", "models")}
    return out_dir / sha256_json(key)[:16] / f"block-{block:04d}.safetensors"


def retrain_block(params: Params, ds: Dataset, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Train the block's models (stacked) -> (masks (s, N) bool, outputs (s, n_test))."""
    cf = params.counterfactual
    n = len(ds.train.y)
    size = subset_size(n, cf.alpha)
    first, stop = block_provenance(params, ds, block)["models"]
    rows = np.stack([subset_rows(n, size, params.seed, k) for k in range(first, stop)])
    seeds = params.seed + SEED_OFFSET + np.arange(first, stop)
    _, section = training_section(params, ds.name)
    stack = train_on_subsets(ds, section, rows, seeds)
    masks = np.zeros((stop - first, n), dtype=bool)
    np.put_along_axis(masks, rows, True, axis=1)
    return masks, stack.margins(ds.test.x, ds.test.y)


def read_block(path: Path, expect: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    arrays, _ = read_safetensors(path, ARTIFACT, expect)
    masks, outputs = arrays.get("masks"), arrays.get("outputs")
    if masks is None or outputs is None or masks.shape[0] != outputs.shape[0]:
        raise mismatch_error(path, ARTIFACT)
    return masks.astype(bool), outputs.astype(np.float64)


def block_count(params: Params) -> int:
    cf = params.counterfactual
    return -(-cf.m // cf.models_per_stack)


def ensure_block(params: Params, ds: Dataset, out_dir: Path, block: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """(path, masks, outputs) of one block: verified from out_dir when present, trained and written when not."""
    subset_size(len(ds.train.y), params.counterfactual.alpha)  # refuse a bad alpha before any work
    path, expect = block_path(out_dir, params, ds, block), block_provenance(params, ds, block)
    if path.exists():
        masks, outputs = read_block(path, expect)  # a block of other data or params is refused, not retrained over
    else:
        masks, outputs = retrain_block(params, ds, block)
        write_safetensors(path, {"masks": masks.astype(np.uint8), "outputs": outputs}, ARTIFACT, expect)
    return path, masks, outputs


def datamodels(params: Params, ds: Dataset, out_dir: Path, progress: bool = False) -> Datamodels:
    """Every block's masks and outputs (``ensure_block`` for each, in order)."""
    cf = params.counterfactual
    subset_size(len(ds.train.y), cf.alpha)
    masks, outputs, paths = [], [], []
    blocks = block_count(params)
    with Progress(blocks, f"retrain {cf.m} models on {ds.name} subsets", "block", bar=progress) as bar:
        for block in range(blocks):
            path, got_masks, got_outputs = ensure_block(params, ds, out_dir, block)
            masks.append(got_masks)
            outputs.append(got_outputs)
            paths.append(path)
            bar.update()
    result = Datamodels(np.concatenate(masks), np.concatenate(outputs), paths)
    if result.outputs.shape != (cf.m, len(ds.test.y)) or not np.isfinite(result.outputs).all():
        raise ArtifactError(f"{out_dir}: the retrained outputs are incomplete or not finite; delete the folder.")
    return result
