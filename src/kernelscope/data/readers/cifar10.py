"""CIFAR-10 'python version' folders (cifar-10-batches-py): five training batches, a test batch and the label
names, all Python pickles read through the restricted unpickler (restricted_pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, register_reader
from kernelscope.data.readers.restricted_pickle import load_restricted

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _get(batch: dict, key: str) -> Any:
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


@register_reader("cifar10", path="folder", image_shape_from_data=True)
def read_cifar10(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    if not path.is_dir():
        raise ArtifactError(
            f"{source}: is not a folder; point data.path at the CIFAR-10 'python version' folder (cifar-10-batches-py)."
        )
    meta = load_restricted(path / CIFAR_META, f"{source}/{CIFAR_META}")
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(v, (bytes, str)) for v in names):
        raise ArtifactError(
            f"{source}/{CIFAR_META}: has no list of 10 'label_names'; re-download the 'python version' files."
        )
    class_names = tuple(v.decode("latin1") if isinstance(v, bytes) else v for v in names)
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):  # report a missing batch before reading any
        if not (path / name).is_file():
            raise ArtifactError(
                f"{source}/{name}: CIFAR-10 batch file not found; the folder must hold data_batch_1..5 "
                "and test_batch, so re-download or unpack the 'python version'."
            )
    xs, ys, tests = [], [], []
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        shown = f"{source}/{name}"
        batch = load_restricted(path / name, shown)
        if not isinstance(batch, dict):
            raise ArtifactError(
                f"{shown}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; re-download the files."
            )
        data, labels = _get(batch, "data"), _get(batch, "labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ArtifactError(
                f"{shown}: entry 'data' is {got}, not a uint8 array of shape (n, 3072); re-download the files."
            )
        try:
            labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise ArtifactError(f"{shown}: entry 'labels' is not a list of integers; re-download the files.") from None
        if labels.shape[0] != data.shape[0]:
            raise ArtifactError(
                f"{shown}: has {data.shape[0]} images but {labels.shape[0]} labels; re-download the files."
            )
        bad = (labels < 0) | (labels > 9)
        if bad.any():
            raise ArtifactError(
                f"{shown}: entry 'labels' has {int(bad.sum())} labels out of range [0, 10) "
                f"(e.g. {int(labels[bad][0])}); re-download the files."
            )
        xs.append(data)
        ys.append(labels)
        tests.append(np.full(data.shape[0], name == CIFAR_TEST_BATCH))
    raw = np.concatenate(xs).reshape(-1, 3, 32, 32)
    x = raw.astype(np.float32) / np.float32(255.0)
    if spec.grayscale:
        x = np.tensordot(x, _LUMA, axes=([1], [0]))[:, None].astype(np.float32)
    return RawArrays(
        x,
        np.concatenate(ys),
        "entry 'data'",
        "entry 'labels'",
        tuple(x.shape[1:]),
        "the CIFAR-10 layout",
        class_names,
        np.concatenate(tests),
    )
