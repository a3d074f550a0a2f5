"""Datasets: scikit-learn's bundled digits, split, and stored as Parquet with content hashes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kernelscope.core.artifacts import read_parquet, write_parquet
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import sha256_bytes

ARTIFACT = "dataset-split"
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
    from sklearn.datasets import load_digits  # here, not at the top: scikit-learn costs every CLI stage ~2 s to import
    from sklearn.model_selection import train_test_split

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
    """A Dataset from a user's arrays (kernelscope.data.readers.ArraySet): the source's own test split when it
    has one, else a stratified split seeded by ``seed``; ids are row numbers in the source."""
    n = len(arrays.y)
    ids = np.arange(n, dtype=np.int64)
    if arrays.is_test is not None:
        test_mask = np.asarray(arrays.is_test, dtype=bool)
        for split_name, mask in (("train", ~test_mask), ("test", test_mask)):
            if not mask.any():
                raise ArtifactError(
                    f"{arrays.source}: the source's own {split_name} split is empty; "
                    f"add {split_name} rows or drop its split marks."
                )
        tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    else:
        from sklearn.model_selection import train_test_split

        counts = np.bincount(arrays.y, minlength=arrays.n_classes)
        if (counts < 2).any():
            raise ArtifactError(
                f"{arrays.source}: class {int(np.argmax(counts < 2))} has {int(counts[counts < 2][0])} point(s); "
                "the stratified train/test split needs at least 2 per class, "
                "add points or set data.n_classes to the classes present."
            )
        tr, te = train_test_split(ids, test_size=test_fraction, stratify=arrays.y, random_state=seed)
        tr, te = np.sort(tr), np.sort(te)
    return Dataset(
        name=name,
        train=Split(arrays.x[tr], arrays.y[tr], ids[tr]),
        test=Split(arrays.x[te], arrays.y[te], ids[te]),
        n_classes=int(arrays.n_classes),
        image_shape=tuple(int(v) for v in arrays.image_shape),
    )


def _split_table(split: Split, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    n, d = split.x.shape
    features = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(split.x, dtype=np.float32).reshape(-1), type=pa.float32()), d
    )
    columns = {"id": pa.array(split.ids, pa.int64()), "label": pa.array(split.y, pa.int64()), "features": features}
    columns.update({name: pa.array(values) for name, values in (extra or {}).items()})
    return pa.table(columns)


def write_split(path: str | Path, split: Split, meta: dict, extra: dict[str, np.ndarray] | None = None) -> str:
    """One split with optional extra per-row columns (e.g. is_poisoned), as a verified artifact
    (kernelscope.core.artifacts).
    """
    write_parquet(path, _split_table(split, extra), ARTIFACT, {**meta, "content_hash": split.content_hash})
    return str(path)


def read_split_table(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[Split, dict, pa.Table]:
    """One verified split: (split, provenance, the whole table with any extra columns)."""
    path = Path(path)
    table, meta = read_parquet(path, ARTIFACT, expect)
    features = table.column("features").combine_chunks()
    d = features.type.list_size
    x = features.flatten().to_numpy().reshape(-1, d).astype(np.float32)
    split = Split(
        x=x, y=table.column("label").to_numpy().astype(np.int64), ids=table.column("id").to_numpy().astype(np.int64)
    )
    n_classes = meta.get("n_classes")
    if (
        not isinstance(n_classes, int)
        or n_classes < 2
        or (len(split.y) and (split.y.min() < 0 or split.y.max() >= n_classes))
    ):
        raise ArtifactError(
            f"{path}: labels do not lie in [0, n_classes) for its recorded n_classes {n_classes!r}; "
            "rerun the data stage."
        )
    return split, meta, table


def read_split(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[Split, dict]:
    """Read one verified split and its provenance."""
    split, meta, _ = read_split_table(path, expect)
    return split, meta


def read_column(path: str | Path, name: str) -> np.ndarray:
    """An extra per-row column of a verified split (e.g. is_poisoned)."""
    _, _, table = read_split_table(path)
    if name not in table.column_names:
        raise ArtifactError(f"{path}: has no column '{name}'; rerun the stage that writes it.")
    return table.column(name).to_numpy()


def write_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    provenance: dict | None = None,
    extra: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, str]:
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
            **(provenance or {}),
        }
        paths[split_name] = write_split(out_dir / f"{split_name}.parquet", split, meta, (extra or {}).get(split_name))
    return {**paths, "dataset_hash": dataset.dataset_hash}


def read_dataset_with_meta(data_dir: str | Path) -> tuple[Dataset, dict[str, Any]]:
    """Both verified splits as a Dataset, and the train split's provenance."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ArtifactError(
            f"{data_dir}: is a file, not a data folder; remove it and run the data stage (kernelscope data)."
        )
    train, meta = read_split(data_dir / "train.parquet")
    test, meta_test = read_split(data_dir / "test.parquet")
    shared = ("dataset", "dataset_hash", "n_classes", "image_shape")
    if any(meta.get(k) != meta_test.get(k) for k in shared):
        raise ArtifactError(
            f"{data_dir}: train.parquet and test.parquet come from different data stage runs; rerun the data stage."
        )
    dataset = Dataset(meta["dataset"], train, test, int(meta["n_classes"]), tuple(meta["image_shape"]))
    if dataset.dataset_hash != meta["dataset_hash"]:
        raise ArtifactError(f"{data_dir}: dataset_hash does not match the files' contents; rerun the data stage.")
    return dataset, meta


def read_dataset(data_dir: str | Path) -> Dataset:
    """Both verified splits (provenance checks against params: kernelscope.core.provenance.run_data)."""
    return read_dataset_with_meta(data_dir)[0]


def restricted(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """The dataset with only the training points in ``mask`` (their order kept); the test split unchanged."""
    train = dataset.train
    keep = np.flatnonzero(mask)
    return replace(dataset, train=Split(train.x[keep], train.y[keep], train.ids[keep]))
