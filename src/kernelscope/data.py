"""Datasets: scikit-learn's bundled digits, split, and stored as Parquet with content hashes."""

from __future__ import annotations

from typing import Any

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kernelscope import __version__
from kernelscope.errors import ArtifactError
from kernelscope.fileio import atomic_path, sha256_bytes

METADATA_KEY = b"kernelscope"
DATASET_CLASSES = {"digits2": (0, 1), "digits10": tuple(range(10))}


@dataclass(frozen=True)
class Split:
    """One split of a dataset: features (n, d) float32 in [0, 1], labels (n,) int64, ids (n,)."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    @property
    def content_hash(self) -> str:
        return sha256_bytes(
            np.ascontiguousarray(self.x, dtype=np.float32).tobytes(),
            np.ascontiguousarray(self.y, dtype=np.int64).tobytes(),
            np.ascontiguousarray(self.ids, dtype=np.int64).tobytes(),
        )


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int
    image_shape: tuple[int, ...]

    @property
    def dataset_hash(self) -> str:
        return sha256_bytes(self.name.encode(), self.train.content_hash.encode(), self.test.content_hash.encode())


def make_digits(name: str, test_fraction: float, seed: int) -> Dataset:
    """Bundled 8x8 digits, pixels scaled to [0, 1], stratified split seeded by ``seed``."""
    if name not in DATASET_CLASSES:
        raise ArtifactError(f"dataset '{name}' is unknown; choose one of {sorted(DATASET_CLASSES)}.")
    bunch = load_digits()
    classes = DATASET_CLASSES[name]
    keep = np.isin(bunch.target, classes)
    x = (bunch.data[keep] / 16.0).astype(np.float32)  # (n, 64)
    y = np.searchsorted(np.asarray(classes), bunch.target[keep]).astype(np.int64)
    ids = np.flatnonzero(keep).astype(np.int64)
    x_tr, x_te, y_tr, y_te, id_tr, id_te = train_test_split(
        x, y, ids, test_size=test_fraction, stratify=y, random_state=seed
    )
    # Sort each split by id so the order is a property of the data, not of the splitter.
    order_tr, order_te = np.argsort(id_tr), np.argsort(id_te)
    return Dataset(
        name=name,
        train=Split(x_tr[order_tr], y_tr[order_tr], id_tr[order_tr]),
        test=Split(x_te[order_te], y_te[order_te], id_te[order_te]),
        n_classes=len(classes),
        image_shape=(8, 8),
    )


def dataset_from_arrays(name: str, arrays: Any, test_fraction: float, seed: int) -> Dataset:
    """A Dataset from a user's arrays (kernelscope.readers.ArraySet): the source's own test split when it
    has one, else a stratified split seeded by ``seed``; ids are row numbers in the source."""
    n = len(arrays.y)
    ids = np.arange(n, dtype=np.int64)
    if arrays.is_test is not None:
        test_mask = np.asarray(arrays.is_test, dtype=bool)
        for split_name, mask in (("train", ~test_mask), ("test", test_mask)):
            if not mask.any():
                raise ArtifactError(f"{arrays.source}: the source's own {split_name} split is empty; add {split_name} rows or drop its split marks.")
        tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    else:
        counts = np.bincount(arrays.y, minlength=arrays.n_classes)
        if (counts < 2).any():
            raise ArtifactError(f"{arrays.source}: class {int(np.argmax(counts < 2))} has {int(counts[counts < 2][0])} point(s); the stratified "
                                "train/test split needs at least 2 per class, add points or set data.n_classes to the classes present.")
        tr, te = train_test_split(ids, test_size=test_fraction, stratify=arrays.y, random_state=seed)
        tr, te = np.sort(tr), np.sort(te)
    return Dataset(name=name, train=Split(arrays.x[tr], arrays.y[tr], ids[tr]), test=Split(arrays.x[te], arrays.y[te], ids[te]),
                   n_classes=int(arrays.n_classes), image_shape=tuple(int(v) for v in arrays.image_shape))


def _split_table(split: Split, meta: dict, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    n, d = split.x.shape
    features = pa.FixedSizeListArray.from_arrays(pa.array(split.x.reshape(-1), type=pa.float32()), d)
    columns = {"id": pa.array(split.ids, pa.int64()), "label": pa.array(split.y, pa.int64()), "features": features}
    columns.update({name: pa.array(values) for name, values in (extra or {}).items()})
    return pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def write_split(path: str | Path, split: Split, meta: dict, extra: dict[str, np.ndarray] | None = None) -> str:
    """One split with optional extra per-row columns (e.g. is_poisoned), atomically; content hash in the metadata."""
    extra_hash = {f"{name}_sha256": sha256_bytes(np.ascontiguousarray(v).tobytes()) for name, v in (extra or {}).items()}
    with atomic_path(path) as tmp:
        pq.write_table(_split_table(split, {**meta, "content_hash": split.content_hash, **extra_hash}, extra), tmp, compression="zstd")
    return str(path)


def read_column(path: str | Path, name: str) -> np.ndarray:
    """An extra per-row column of a split, checked against the hash stored with it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: dataset file not found; run the stage that writes it first.")
    table = pq.read_table(path)
    if name not in table.column_names:
        raise ArtifactError(f"{path}: has no column '{name}'; rerun the stage that writes it.")
    values = table.column(name).to_numpy()
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    if sha256_bytes(np.ascontiguousarray(values).tobytes()) != meta.get(f"{name}_sha256"):
        raise ArtifactError(f"{path}: column '{name}' does not match its recorded hash; the file was modified, rerun the stage.")
    return values


def write_dataset(dataset: Dataset, out_dir: str | Path, provenance: dict | None = None,
                  extra: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, str]:
    """Write train.parquet and test.parquet atomically; return their paths and the dataset hash."""
    out_dir = Path(out_dir)
    paths = {}
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        meta = {
            "dataset": dataset.name,
            "split": split_name,
            "n_classes": dataset.n_classes,
            "image_shape": list(dataset.image_shape),
            "dataset_hash": dataset.dataset_hash,
            "kernelscope_version": __version__,
            **(provenance or {}),
        }
        paths[split_name] = write_split(out_dir / f"{split_name}.parquet", split, meta, (extra or {}).get(split_name))
    return {**paths, "dataset_hash": dataset.dataset_hash}


def read_split(path: str | Path) -> tuple[Split, dict]:
    """Read one split; verify its content hash against the metadata written with it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: dataset file not found; run the data stage first (kernelscope data).")
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[METADATA_KEY])
    except (pa.ArrowInvalid, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not a kernelscope dataset file ({error.__class__.__name__}); rerun the data stage.") from None
    features = table.column("features").combine_chunks()
    d = features.type.list_size
    x = features.flatten().to_numpy().reshape(-1, d).astype(np.float32)
    split = Split(x=x, y=table.column("label").to_numpy().astype(np.int64), ids=table.column("id").to_numpy().astype(np.int64))
    if split.content_hash != meta.get("content_hash"):
        raise ArtifactError(f"{path}: content does not match its recorded content_hash; the file was modified, rerun the data stage.")
    return split, meta


def read_dataset(data_dir: str | Path) -> Dataset:
    data_dir = Path(data_dir)
    train, meta = read_split(data_dir / "train.parquet")
    test, meta_test = read_split(data_dir / "test.parquet")
    if meta["dataset_hash"] != meta_test["dataset_hash"]:
        raise ArtifactError(f"{data_dir}: train.parquet and test.parquet come from different data stage runs; rerun the data stage.")
    dataset = Dataset(meta["dataset"], train, test, int(meta["n_classes"]), tuple(meta["image_shape"]))
    if dataset.dataset_hash != meta["dataset_hash"]:
        raise ArtifactError(f"{data_dir}: dataset_hash does not match the files' contents; rerun the data stage.")
    return dataset
