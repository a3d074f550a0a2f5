"""What every reader shares: the checked ArraySet, validate_arrays, the RawArrays a reader returns and the
READERS registry (one entry per format, added by ``register_reader`` in the format's own module)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams


@dataclass(frozen=True)
class ArraySet:
    """A data set as checked arrays."""

    x: np.ndarray  # (n, d) float32, finite, features flattened per point
    y: np.ndarray  # (n,) int64 in [0, n_classes)
    n_classes: int
    image_shape: tuple[int, ...]  # (c, h, w) for images, else (d,)
    class_names: tuple[str, ...]  # len n_classes ("0", "1", ... when unnamed)
    is_test: np.ndarray | None  # (n,) bool when the source defines its own test split, else None
    source: str  # the file or folder read, for messages and provenance


@dataclass(frozen=True)
class RawArrays:
    """What a reader found, before the checks every format shares (``validate_arrays`` and the image shape)."""

    x: np.ndarray  # (n, ...) features as stored
    y: np.ndarray  # (n,) labels as stored
    x_name: str  # where x came from in messages, e.g. "array 'x'"
    y_name: str  # where y came from in messages, e.g. "column 'label'"
    image_shape: tuple[int, ...] | None  # (c, h, w) when known, None: flat vectors
    shape_origin: str  # what gave image_shape, in messages, e.g. "data.image_shape"
    class_names: tuple[str, ...] | None  # when the source names its classes (then it also fixes their count)
    is_test: np.ndarray | None  # (n,) bool when the source defines its own test split


# read(spec, source, path, seed): source names the data in messages; path is None for a reader that needs none.
ReadFn = Callable[[DataSourceParams, str, Path | None, int], RawArrays]


def _path_source(spec: DataSourceParams, seed: int) -> str:
    return str(spec.path)


@dataclass(frozen=True)
class Reader:
    """A format's entry in READERS: its read function and what it needs, so read_source has no per-format branches."""

    read: ReadFn
    path: Literal["file", "folder"] | None  # what data.path must name; None: the data are generated, no path
    image_shape_from_data: bool  # the data fix the image shape, so data.image_shape must agree with it
    source: Callable[[DataSourceParams, int], str] = _path_source  # the name of the data in messages and provenance


READERS: dict[str, Reader] = {}


def register_reader(
    name: str,
    *,
    path: Literal["file", "folder"] | None,
    image_shape_from_data: bool = False,
    source: Callable[[DataSourceParams, int], str] = _path_source,
) -> Callable[[ReadFn], ReadFn]:
    """Decorator adding a read function to READERS as data.format ``name`` (which DataSourceParams then accepts)."""

    def register(read: ReadFn) -> ReadFn:
        if name in READERS:
            raise ValueError(
                f"data format {name!r} is registered twice ({READERS[name].read.__module__} and "
                f"{read.__module__}); give the new reader another name."
            )
        READERS[name] = Reader(read=read, path=path, image_shape_from_data=image_shape_from_data, source=source)
        return read

    return register


# --------------------------------------------------------------------------------------------------
# checks shared by every format


def validate_arrays(
    x: Any, y: Any, *, source: str, n_classes: int | None, x_name: str, y_name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check features and labels; return (x float32 (n, d), y int64 (n,), n_classes).

    ``x_name`` / ``y_name`` describe where the arrays came from in messages, e.g. "array 'x'" or "column 'label'".
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise ArtifactError(
            f"{source}: {x_name} has dtype {x.dtype}, which is not numeric; store the features as integers or floats."
        )
    if y.dtype.kind not in "biuf":
        raise ArtifactError(
            f"{source}: {y_name} has dtype {y.dtype}, which is not integer labels; store the classes "
            "as integers 0..K-1."
        )
    if x.ndim == 0 or x.shape[0] == 0 or y.size == 0:
        raise ArtifactError(
            f"{source}: {x_name if (x.ndim == 0 or x.shape[0] == 0) else y_name} is empty (no rows); "
            "provide at least one point of each of two classes."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ArtifactError(f"{source}: {y_name} has shape {y.shape}, not (n,); store one integer label per point.")
    if x.shape[0] != y.shape[0]:
        raise ArtifactError(
            f"{source}: {x_name} has {x.shape[0]} rows but {y_name} has {y.shape[0]}; give exactly one label per point."
        )
    n = x.shape[0]
    x = x.reshape(n, -1)
    if x.shape[1] == 0:
        raise ArtifactError(
            f"{source}: {x_name} has no features (shape {x.shape}); store at least one feature per point."
        )

    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            n_nan = int(np.isnan(x).sum())
            n_inf = int(x.size - finite.sum() - n_nan)
            row = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise ArtifactError(
                f"{source}: {x_name} has {n_nan} NaN and {n_inf} infinite values (first in row {row}); "
                "remove or impute those values before reading."
            )
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        finite32 = np.isfinite(x32)
        if not finite32.all():
            row = int(np.flatnonzero(~finite32.all(axis=1))[0])
            raise ArtifactError(
                f"{source}: {x_name} has {int(x32.size - finite32.sum())} values beyond the float32 "
                f"range (first in row {row}); rescale the features."
            )

    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ArtifactError(
                f"{source}: {y_name} is not integer-valued ({int(bad.sum())} labels, e.g. "
                f"{y[row].item()!r} in row {row}); store integer class labels 0..K-1."
            )
    if y.dtype.kind == "u" and y.dtype.itemsize == 8 and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise ArtifactError(
            f"{source}: {y_name} has labels beyond the int64 range (e.g. {int(y.max())}); store labels 0..K-1."
        )
    y64 = np.ascontiguousarray(y, dtype=np.int64)

    if n_classes is not None:
        n_classes = int(n_classes)
        if n_classes < 2:
            raise ArtifactError(
                f"{source}: data.n_classes is {n_classes}, but a classifier needs at least 2 classes; "
                "set data.n_classes to 2 or more."
            )
        bad = (y64 < 0) | (y64 >= n_classes)
        if bad.any():
            raise ArtifactError(
                f"{source}: {y_name} has {int(bad.sum())} labels out of range [0, {n_classes}) "
                f"(e.g. {int(y64[bad][0])}); fix the labels or set data.n_classes."
            )
    else:
        negative = y64 < 0
        if negative.any():
            raise ArtifactError(
                f"{source}: {y_name} has {int(negative.sum())} negative labels (e.g. "
                f"{int(y64[negative][0])}); remap the classes to 0..K-1."
            )
        n_classes = int(y64.max()) + 1
        if n_classes < 2:
            raise ArtifactError(
                f"{source}: {y_name} gives a class count of {n_classes} (largest label "
                f"{n_classes - 1}); a classifier needs labels of at least two classes 0..K-1."
            )
    present = np.unique(y64)
    if present.size < 2:
        raise ArtifactError(
            f"{source}: {y_name} holds only one class (label {int(present[0])}); "
            "include points of at least two classes."
        )
    return x32, y64, n_classes


# --------------------------------------------------------------------------------------------------
# helpers of the tabular formats (npz, parquet)


def split_to_is_test(values: np.ndarray, *, source: str, name: str, n: int) -> np.ndarray:
    """A stored 'train'/'test' column as (n,) bool, True for test rows."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    if values.dtype.kind != "U":
        raise ArtifactError(f"{source}: {name} has dtype {values.dtype}, not strings; store 'train' or 'test' per row.")
    values = values.reshape(-1)
    if values.shape[0] != n:
        raise ArtifactError(
            f"{source}: {name} has {values.shape[0]} entries but there are {n} rows; store one 'train'/'test' per row."
        )
    bad = ~np.isin(values, ["train", "test"])
    if bad.any():
        raise ArtifactError(
            f"{source}: {name} has {int(bad.sum())} values other than 'train' and 'test' "
            f"(e.g. {str(values[bad][0])!r}); use only 'train' or 'test'."
        )
    return values == "test"


def as_shape(value: Any, *, source: str, name: str) -> tuple[int, ...]:
    """A stored image shape as a tuple of positive ints."""
    try:
        arr = np.asarray(value)
        if (
            arr.ndim != 1
            or arr.size == 0
            or arr.dtype.kind not in "iuf"
            or np.any(arr != np.round(arr))
            or np.any(arr < 1)
        ):
            raise ValueError
        return tuple(int(v) for v in arr)
    except (ValueError, TypeError):
        raise ArtifactError(
            f"{source}: {name} is {value!r}, not a list of positive integers; "
            "store it as e.g. [3, 32, 32] (channels, height, width)."
        ) from None
