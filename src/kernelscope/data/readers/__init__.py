"""Readers of a user's data set (npz, Parquet, image folder, CIFAR-10, IDX, MNIST-1D, synthetic images) into
checked arrays.

One module per format, each registering its read function in READERS (base.py); ``read_source`` looks the
format up there and applies the checks every format shares. Nothing here unpickles arbitrary objects: npz
files are opened with ``allow_pickle=False`` and the CIFAR-10 batches (Python pickles) go through the
restricted unpickler (restricted_pickle.py) that rebuilds numeric numpy arrays itself and refuses every other
global. Every refusal is an ``ArtifactError`` of one sentence naming the file, the field or array, what is
wrong and the fix. A new format is one module with a ``@register_reader`` function, imported below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import READERS, ArraySet, validate_arrays

# Imported for their registration in READERS, in the order formats are listed in messages (so not sorted).
# isort: off
from kernelscope.data.readers import npz, parquet, image_folder, cifar10, idx, mnist1d, synthetic  # noqa: F401
# isort: on

__all__ = ["READERS", "ArraySet", "read_source", "validate_arrays"]


def _subsample(y: np.ndarray, n_classes: int, limit: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = np.zeros(y.shape[0], dtype=bool)
    for c in range(n_classes):
        index = np.flatnonzero(y == c)
        if index.size > limit:
            index = rng.choice(index, size=limit, replace=False)
        keep[index] = True
    return keep


def _select_classes(
    classes: tuple[int, ...], y: np.ndarray, class_names: tuple[str, ...], source: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(rows kept, their labels 0..k-1 in the order of ``classes``, the kept classes' names)."""
    listed = list(classes)
    if len(listed) < 2:
        raise ArtifactError(
            f"{source}: data.classes {listed} lists {len(listed)} label(s), but a classifier needs at least 2; "
            "list two or more labels, or remove data.classes to keep every class."
        )
    twice = sorted({c for c in listed if listed.count(c) > 1})
    if twice:
        raise ArtifactError(f"{source}: data.classes {listed} lists label {twice[0]} more than once; list each once.")
    present = np.unique(y)
    absent = [c for c in listed if c not in present]
    if absent:
        shown = ", ".join(str(int(v)) for v in present[:12]) + (", ..." if present.size > 12 else "")
        raise ArtifactError(
            f"{source}: data.classes lists label {absent[0]}, which the data do not hold (labels present: "
            f"{shown}); list only labels present in the source."
        )
    lookup = np.full(int(present.max()) + 1, -1, dtype=np.int64)
    lookup[listed] = np.arange(len(listed))
    new_y = lookup[y]
    keep = new_y >= 0
    return keep, new_y[keep], tuple(class_names[c] for c in listed)


def read_source(spec: DataSourceParams, seed: int = 0) -> ArraySet:
    """Read the data set ``spec`` describes into checked arrays (no unpickling of arbitrary objects, no downloads)."""
    fmt = spec.format
    reader = READERS[fmt]
    path: Path | None = None
    if reader.path is not None:
        if not spec.path:
            raise ArtifactError(
                f"data.path is not set for format '{fmt}'; set data.path to the file or folder to read."
            )
        path = Path(spec.path).expanduser()
    source = reader.source(spec, seed)
    if path is not None:
        if not path.exists():
            raise ArtifactError(f"{source}: not found; fix data.path (relative paths start at the working directory).")
        if reader.path == "file" and path.is_dir():
            raise ArtifactError(
                f"{source}: is a folder, but format '{fmt}' reads one file; point data.path at the file."
            )
    raw = reader.read(spec, source, path, seed)
    x, y, image_shape, class_names, is_test = raw.x, raw.y, raw.image_shape, raw.class_names, raw.is_test
    if reader.image_shape_from_data and spec.image_shape is not None and tuple(spec.image_shape) != image_shape:
        raise ArtifactError(
            f"{source}: data.image_shape is {tuple(spec.image_shape)} but the images read are "
            f"{image_shape}; remove data.image_shape (use data.image_size to resize an image folder)."
        )

    if class_names is not None and spec.n_classes is not None and spec.n_classes != len(class_names):
        raise ArtifactError(
            f"{source}: data.n_classes is {spec.n_classes} but the source defines {len(class_names)} "
            "classes; remove data.n_classes or make it agree."
        )
    n_given = spec.n_classes if class_names is None else len(class_names)
    x, y, n_classes = validate_arrays(x, y, source=source, n_classes=n_given, x_name=raw.x_name, y_name=raw.y_name)
    d = x.shape[1]
    if image_shape is None:
        image_shape = (d,)
    image_shape = tuple(int(v) for v in image_shape)
    if int(np.prod(image_shape)) != d:
        raise ArtifactError(
            f"{source}: {raw.shape_origin} gives image shape {image_shape} "
            f"({int(np.prod(image_shape))} values) but each point has {d} features; "
            "fix the image shape or the features."
        )
    if class_names is None:
        class_names = tuple(str(i) for i in range(n_classes))
    if spec.classes is not None:  # before max_per_class, which then counts the kept classes
        keep, y, class_names = _select_classes(tuple(spec.classes), y, tuple(class_names), source)
        x, n_classes = x[keep], len(class_names)
        is_test = None if is_test is None else np.asarray(is_test)[keep]
    if spec.max_per_class is not None:
        keep = _subsample(y, n_classes, spec.max_per_class, seed)
        if not keep.all():
            x, y = x[keep], y[keep]
            is_test = None if is_test is None else is_test[keep]
    return ArraySet(
        x=x,
        y=y,
        n_classes=n_classes,
        image_shape=image_shape,
        class_names=tuple(class_names),
        is_test=None if is_test is None else np.asarray(is_test, dtype=bool),
        source=source,
    )
