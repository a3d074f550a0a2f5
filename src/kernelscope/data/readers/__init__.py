"""Readers of a user's data set (npz, Parquet, image folder, CIFAR-10, MNIST-1D) into checked arrays.

Nothing here unpickles arbitrary objects: npz files are opened with ``allow_pickle=False`` and the
CIFAR-10 batches (Python pickles) go through a restricted unpickler that rebuilds numeric numpy arrays
itself and refuses every other global. Every refusal is an ``ArtifactError`` of one sentence naming the
file, the field or array, what is wrong and the fix.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.params import DataSourceParams

__all__ = ["ArraySet", "read_source", "validate_arrays"]

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ArraySet:
    """A data set as checked arrays."""

    x: np.ndarray                   # (n, d) float32, finite, features flattened per point
    y: np.ndarray                   # (n,) int64 in [0, n_classes)
    n_classes: int
    image_shape: tuple[int, ...]    # (c, h, w) for images, else (d,)
    class_names: tuple[str, ...]    # len n_classes ("0", "1", ... when unnamed)
    is_test: np.ndarray | None      # (n,) bool when the source defines its own test split, else None
    source: str                     # the file or folder read, for messages and provenance


# --------------------------------------------------------------------------------------------------
# validation shared by every format


def validate_arrays(x: Any, y: Any, *, source: str, n_classes: int | None, x_name: str, y_name: str
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Check features and labels; return (x float32 (n, d), y int64 (n,), n_classes).

    ``x_name`` / ``y_name`` describe where the arrays came from in messages, e.g. "array 'x'" or "column 'label'".
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise ArtifactError(f"{source}: {x_name} has dtype {x.dtype}, which is not numeric; store the features as integers or floats.")
    if y.dtype.kind not in "biuf":
        raise ArtifactError(f"{source}: {y_name} has dtype {y.dtype}, which is not integer labels; store the classes as integers 0..K-1.")
    if x.ndim == 0 or x.shape[0] == 0 or y.size == 0:
        raise ArtifactError(f"{source}: {x_name if (x.ndim == 0 or x.shape[0] == 0) else y_name} is empty (no rows); "
                            "provide at least one point of each of two classes.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ArtifactError(f"{source}: {y_name} has shape {y.shape}, not (n,); store one integer label per point.")
    if x.shape[0] != y.shape[0]:
        raise ArtifactError(f"{source}: {x_name} has {x.shape[0]} rows but {y_name} has {y.shape[0]}; "
                            "give exactly one label per point.")
    n = x.shape[0]
    x = x.reshape(n, -1)
    if x.shape[1] == 0:
        raise ArtifactError(f"{source}: {x_name} has no features (shape {x.shape}); store at least one feature per point.")

    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            n_nan = int(np.isnan(x).sum())
            n_inf = int(x.size - finite.sum() - n_nan)
            row = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise ArtifactError(f"{source}: {x_name} has {n_nan} NaN and {n_inf} infinite values (first in row {row}); "
                                "remove or impute those values before reading.")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        finite32 = np.isfinite(x32)
        if not finite32.all():
            row = int(np.flatnonzero(~finite32.all(axis=1))[0])
            raise ArtifactError(f"{source}: {x_name} has {int(x32.size - finite32.sum())} values beyond the float32 range "
                                f"(first in row {row}); rescale the features.")

    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ArtifactError(f"{source}: {y_name} is not integer-valued ({int(bad.sum())} labels, e.g. {y[row].item()!r} in row {row}); "
                                "store integer class labels 0..K-1.")
    if y.dtype.kind == "u" and y.dtype.itemsize == 8 and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise ArtifactError(f"{source}: {y_name} has labels beyond the int64 range (e.g. {int(y.max())}); store labels 0..K-1.")
    y64 = np.ascontiguousarray(y, dtype=np.int64)

    if n_classes is not None:
        n_classes = int(n_classes)
        if n_classes < 2:
            raise ArtifactError(f"{source}: data.n_classes is {n_classes}, but a classifier needs at least 2 classes; "
                                "set data.n_classes to 2 or more.")
        bad = (y64 < 0) | (y64 >= n_classes)
        if bad.any():
            raise ArtifactError(f"{source}: {y_name} has {int(bad.sum())} labels out of range [0, {n_classes}) "
                                f"(e.g. {int(y64[bad][0])}); fix the labels or set data.n_classes.")
    else:
        negative = y64 < 0
        if negative.any():
            raise ArtifactError(f"{source}: {y_name} has {int(negative.sum())} negative labels (e.g. {int(y64[negative][0])}); "
                                "remap the classes to 0..K-1.")
        n_classes = int(y64.max()) + 1
        if n_classes < 2:
            raise ArtifactError(f"{source}: {y_name} gives a class count of {n_classes} (largest label {n_classes - 1}); "
                                "a classifier needs labels of at least two classes 0..K-1.")
    present = np.unique(y64)
    if present.size < 2:
        raise ArtifactError(f"{source}: {y_name} holds only one class (label {int(present[0])}); "
                            "include points of at least two classes.")
    return x32, y64, n_classes


# --------------------------------------------------------------------------------------------------
# npz


def _split_to_is_test(values: np.ndarray, *, source: str, name: str, n: int) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    if values.dtype.kind != "U":
        raise ArtifactError(f"{source}: {name} has dtype {values.dtype}, not strings; store 'train' or 'test' per row.")
    values = values.reshape(-1)
    if values.shape[0] != n:
        raise ArtifactError(f"{source}: {name} has {values.shape[0]} entries but there are {n} rows; store one 'train'/'test' per row.")
    bad = ~np.isin(values, ["train", "test"])
    if bad.any():
        raise ArtifactError(f"{source}: {name} has {int(bad.sum())} values other than 'train' and 'test' "
                            f"(e.g. {str(values[bad][0])!r}); use only 'train' or 'test'.")
    return values == "test"


def _as_shape(value: Any, *, source: str, name: str) -> tuple[int, ...]:
    try:
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iuf" or np.any(arr != np.round(arr)) or np.any(arr < 1):
            raise ValueError
        return tuple(int(v) for v in arr)
    except (ValueError, TypeError):
        raise ArtifactError(f"{source}: {name} is {value!r}, not a list of positive integers; "
                            "store it as e.g. [3, 32, 32] (channels, height, width).") from None


def _read_npz(spec: DataSourceParams, source: str, path: Path):
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any failure to open is the user's file
        raise ArtifactError(f"{source}: not a readable .npz archive ({error.__class__.__name__}: {error}); "
                            "save it with numpy.savez or point data.path at one.") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ArtifactError(f"{source}: holds a single .npy array, not an .npz archive; save x and y together with numpy.savez.")
    with archive:
        names = list(archive.files)

        def get(key: str, field: str | None) -> np.ndarray:
            if key not in names:
                fix = f"set {field} to the right array's name" if field else "add it"
                raise ArtifactError(f"{source}: has no array '{key}' (arrays: {', '.join(names) or 'none'}); {fix}.")
            try:
                return archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise ArtifactError(f"{source}: array '{key}' is an object (pickled) array, which is not loaded because "
                                        "unpickling can run code; save it as a numeric or string array.") from None
                raise ArtifactError(f"{source}: array '{key}' is unreadable ({error}); save it again with numpy.savez.") from None
            except Exception as error:  # noqa: BLE001
                raise ArtifactError(f"{source}: array '{key}' is unreadable ({error.__class__.__name__}: {error}); "
                                    "save it again with numpy.savez.") from None

        x = get(spec.x_key, "data.x_key")
        y = get(spec.y_key, "data.y_key")
        stored_shape = get("image_shape", None) if "image_shape" in names else None
        split = get("split", None) if "split" in names else None
    x_name, y_name = f"array '{spec.x_key}'", f"array '{spec.y_key}'"
    implied: tuple[int, ...] | None = None
    if x.ndim > 2:
        implied = (1, *x.shape[1:]) if x.ndim == 3 else tuple(x.shape[1:])
    image_shape: tuple[int, ...] | None
    if spec.image_shape is not None:
        image_shape = tuple(spec.image_shape)
        if implied is not None and image_shape != implied:
            raise ArtifactError(f"{source}: {x_name} has per-point shape {tuple(x.shape[1:])} but data.image_shape is "
                                f"{image_shape}; store x as (n, channels, height, width) or remove data.image_shape.")
        shape_origin = "data.image_shape"
    elif stored_shape is not None:
        image_shape = _as_shape(stored_shape, source=source, name="array 'image_shape'")
        if implied is not None and image_shape != implied:
            raise ArtifactError(f"{source}: {x_name} has per-point shape {tuple(x.shape[1:])} but array 'image_shape' is "
                                f"{image_shape}; make them agree.")
        shape_origin = "array 'image_shape'"
    else:
        image_shape, shape_origin = implied, "x"
    n_rows = x.shape[0] if x.ndim else 0
    is_test = None if split is None else _split_to_is_test(split, source=source, name="array 'split'", n=n_rows)
    return x, y, x_name, y_name, image_shape, shape_origin, None, is_test


# --------------------------------------------------------------------------------------------------
# parquet


def _read_parquet(spec: DataSourceParams, source: str, path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001
        raise ArtifactError(f"{source}: not a readable Parquet file ({error.__class__.__name__}: {error}); "
                            "point data.path at a Parquet file.") from None
    columns = table.column_names

    def column(name: str, field: str | None):
        if name not in columns:
            fix = f"set {field} to the right column" if field else "add it"
            raise ArtifactError(f"{source}: has no column '{name}' (columns: {', '.join(columns)}); {fix}.")
        col = table.column(name)
        if col.null_count:
            raise ArtifactError(f"{source}: column '{name}' has {col.null_count} missing (null) values; fill or drop those rows.")
        return col

    def numeric(typ) -> bool:
        return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)

    label = column(spec.label_column, "data.label_column")
    y_name = f"column '{spec.label_column}'"
    if not numeric(label.type):
        raise ArtifactError(f"{source}: {y_name} has type {label.type}, not integer labels; store the classes as integers 0..K-1.")
    y = label.to_numpy()

    if spec.feature_columns is not None:
        names = list(spec.feature_columns)
        if not names:
            raise ArtifactError(f"{source}: data.feature_columns is empty; list the feature columns or set it to null.")
        parts = []
        for name in names:
            col = column(name, "data.feature_columns")
            if not numeric(col.type):
                raise ArtifactError(f"{source}: feature column '{name}' has type {col.type}, not a number; "
                                    "drop it from data.feature_columns or store it as numbers.")
            parts.append(col.to_numpy())
        x = np.stack(parts, axis=1)
        x_name = "data.feature_columns" if len(names) > 1 else f"column '{names[0]}'"
    elif "features" in columns and (pa.types.is_list(table.schema.field("features").type)
                                    or pa.types.is_large_list(table.schema.field("features").type)
                                    or pa.types.is_fixed_size_list(table.schema.field("features").type)):
        col = column("features", None).combine_chunks()
        x_name = "column 'features'"
        if not numeric(col.type.value_type):
            raise ArtifactError(f"{source}: {x_name} holds {col.type.value_type} items, not numbers; store numeric feature lists.")
        flat = col.flatten()
        if flat.null_count:
            raise ArtifactError(f"{source}: {x_name} has {flat.null_count} missing (null) items; fill them before reading.")
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            width = int(lengths[0]) if lengths.size else 0
            odd = np.flatnonzero(lengths != width)
            if odd.size:
                raise ArtifactError(f"{source}: {x_name} has rows of different lengths (row 0: {width}, row {int(odd[0])}: "
                                    f"{int(lengths[odd[0]])}); store the same number of features in every row.")
        x = flat.to_numpy(zero_copy_only=False).reshape(len(col), width)
    else:
        names = [name for name in columns
                 if name not in (spec.label_column, "split") and numeric(table.schema.field(name).type)]
        if not names:
            raise ArtifactError(f"{source}: has no numeric feature columns besides '{spec.label_column}' "
                                f"(columns: {', '.join(columns)}); add them or set data.feature_columns.")
        x = np.stack([column(name, None).to_numpy() for name in names], axis=1)
        x_name = "the feature columns"

    is_test = None
    if "split" in columns:
        split = column("split", None)
        if not (pa.types.is_string(split.type) or pa.types.is_large_string(split.type) or pa.types.is_dictionary(split.type)):
            raise ArtifactError(f"{source}: column 'split' has type {split.type}, not strings; store 'train' or 'test' per row.")
        is_test = _split_to_is_test(np.asarray(split.to_pylist(), dtype=str), source=source, name="column 'split'", n=len(y))

    image_shape, shape_origin = None, "x"
    if spec.image_shape is not None:
        image_shape, shape_origin = tuple(spec.image_shape), "data.image_shape"
    else:
        meta = table.schema.metadata or {}
        if b"image_shape" in meta:
            try:
                stored = json.loads(meta[b"image_shape"])
            except ValueError:
                raise ArtifactError(f"{source}: schema metadata 'image_shape' is not JSON ({meta[b'image_shape'][:40]!r}); "
                                    "store it as a JSON list such as [3, 32, 32].") from None
            image_shape = _as_shape(stored, source=source, name="schema metadata 'image_shape'")
            shape_origin = "schema metadata 'image_shape'"
    return x, y, x_name, y_name, image_shape, shape_origin, None, is_test


# --------------------------------------------------------------------------------------------------
# image folder


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _read_image_folder(spec: DataSourceParams, source: str, path: Path):
    from PIL import Image

    if not path.is_dir():
        raise ArtifactError(f"{source}: is not a folder; point data.path at a folder with one subfolder of images per class.")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and _visible(p))
    if len(classes) < 2:
        raise ArtifactError(f"{source}: has {len(classes)} class subfolders ({', '.join(classes) or 'none'}); "
                            "put the images in one subfolder per class, at least two.")
    mode = "L" if spec.grayscale else "RGB"
    size_hw = tuple(spec.image_size) if spec.image_size is not None else None
    first: tuple[str, tuple[int, int]] | None = None
    pixels, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (path / name).iterdir() if p.is_file() and _visible(p))
        if not files:
            raise ArtifactError(f"{source}/{name}: class folder holds no image files; add images or remove the folder.")
        for file in files:
            shown = f"{source}/{name}/{file.name}"
            try:
                with Image.open(file) as image:
                    image.load()
                    image = image.convert(mode)
            except Exception as error:  # noqa: BLE001 - Pillow raises many kinds
                raise ArtifactError(f"{shown}: Pillow cannot read this file as an image ({error.__class__.__name__}: {error}); "
                                    "remove it or replace it with a valid image.") from None
            if size_hw is not None:
                if (image.height, image.width) != size_hw:
                    image = image.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
            elif first is None:
                first = (shown, (image.height, image.width))
            elif (image.height, image.width) != first[1]:
                (h0, w0), (h1, w1) = first[1], (image.height, image.width)
                raise ArtifactError(f"{source}: images differ in size ({first[0]} is {h0}x{w0} but {shown} is {h1}x{w1} "
                                    "(height x width)); set data.image_size to resize them all.")
            arr = np.asarray(image, dtype=np.uint8)
            pixels.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    stacked = np.stack(pixels)
    x = stacked.astype(np.float32) / np.float32(255.0)
    image_shape = tuple(int(v) for v in stacked.shape[1:])
    return (x, np.asarray(labels, dtype=np.int64), "the images", "the class subfolders", image_shape, "the images",
            tuple(classes), None)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (restricted unpickling)

_NUMERIC_DTYPE = re.compile(r"^[biuf]\d{1,2}$")


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, (bytes, bytearray)) else str(value)


class _DTypeStub:
    """Stands in for numpy.dtype while unpickling; resolved to a numeric dtype only."""

    def __init__(self, owner: "_RestrictedUnpickler", spec: Any, align: Any = False, copy: Any = False):
        self.owner, self.spec, self.byteorder = owner, _text(spec), "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2:
            self.byteorder = _text(state[1])

    def resolve(self) -> np.dtype:
        if not _NUMERIC_DTYPE.match(self.spec) or self.byteorder not in "<>|=":
            raise ArtifactError(f"{self.owner.source}: holds an array of dtype '{self.spec}', which is not read (only numeric "
                                "arrays are, so nothing is unpickled); use the official CIFAR-10 'python version' files.")
        try:
            return np.dtype(self.byteorder + self.spec if self.byteorder in "<>" else self.spec)
        except TypeError:
            raise ArtifactError(f"{self.owner.source}: holds an array of unknown dtype '{self.spec}'; "
                                "use the official CIFAR-10 'python version' files.") from None


def _as_dtype(owner: "_RestrictedUnpickler", value: Any) -> np.dtype:
    if not isinstance(value, _DTypeStub):
        raise ArtifactError(f"{owner.source}: holds an array whose dtype is not a numpy dtype ({type(value).__name__}); "
                            "use the official CIFAR-10 'python version' files.")
    return value.resolve()


class _ArrayStub:
    """Stands in for numpy.ndarray while unpickling; built from raw bytes on __setstate__."""

    def __init__(self, owner: "_RestrictedUnpickler"):
        self.owner, self.array = owner, None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise ArtifactError(f"{self.owner.source}: holds a malformed numpy array state; use the official CIFAR-10 files.")
        shape, dtype, fortran, raw = state
        dtype = _as_dtype(self.owner, dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise ArtifactError(f"{self.owner.source}: holds an array whose data are not raw bytes ({type(raw).__name__}); "
                                "use the official CIFAR-10 'python version' files.")
        shape = tuple(int(v) for v in shape)
        self.array = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numeric numpy arrays (and plain Python containers); any other global is refused."""

    _RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
    _FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
    _SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._RECONSTRUCT:
            return self._reconstruct
        if key in self._FROMBUFFER:
            return self._frombuffer
        if key == ("numpy", "ndarray"):
            return _NDARRAY
        if key == ("numpy", "dtype"):
            return self._dtype
        if key in self._SCALAR:
            return self._scalar
        if key == ("_codecs", "encode"):
            return self._encode
        raise ArtifactError(f"{self.source}: the pickle asks to load the global '{module}.{name}', which is refused (only numpy "
                            "array pieces are allowed); this is not a genuine CIFAR-10 batch, so re-download the 'python version'.")

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> _DTypeStub:
        return _DTypeStub(self, spec, align, copy)

    def _reconstruct(self, cls: Any, shape: Any = None, dtype: Any = None) -> _ArrayStub:
        if cls is not _NDARRAY:
            raise ArtifactError(f"{self.source}: the pickle rebuilds an array subclass ({cls!r}), which is refused; "
                                "use the official CIFAR-10 'python version' files.")
        return _ArrayStub(self)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
            raise ArtifactError(f"{self.source}: holds an array whose data are not raw bytes; use the official CIFAR-10 files.")
        array = np.frombuffer(bytes(buf), dtype=_as_dtype(self, dtype))
        return array.reshape(tuple(int(v) for v in shape), order=_text(order)).copy()

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _as_dtype(self, dtype)
        if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
            raise ArtifactError(f"{self.source}: holds a malformed numpy scalar; use the official CIFAR-10 files.")
        return np.frombuffer(bytes(data), dtype=dtype)[0]

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or _text(encoding).lower().replace("-", "") != "latin1":
            raise ArtifactError(f"{self.source}: the pickle calls _codecs.encode with encoding {encoding!r}, which is refused "
                                "(only latin1 byte strings are allowed); use the official CIFAR-10 files.")
        return text.encode("latin1")


class _Marker:
    """Stands in for the global numpy.ndarray (only usable as _reconstruct's first argument); state cannot be set on it."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("state set on numpy.ndarray")


_NDARRAY = _Marker()


def _materialize(value: Any) -> Any:
    if isinstance(value, _ArrayStub):
        return value.array
    if isinstance(value, dict):
        return {key: _materialize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_materialize(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_materialize(item) for item in value)
    return value


def _load_restricted(path: Path, source: str) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{source}: file not found; the CIFAR-10 'python version' folder must hold data_batch_1..5, "
                            "test_batch and batches.meta.")
    try:
        with open(path, "rb") as handle:
            return _materialize(_RestrictedUnpickler(handle, source).load())
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt pickle can raise almost anything
        raise ArtifactError(f"{source}: not a readable CIFAR-10 pickle ({error.__class__.__name__}: {error}); "
                            "re-download the 'python version' files.") from None


def _get(batch: dict, key: str) -> Any:
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _read_cifar10(spec: DataSourceParams, source: str, path: Path):
    if not path.is_dir():
        raise ArtifactError(f"{source}: is not a folder; point data.path at the CIFAR-10 'python version' folder "
                            "(cifar-10-batches-py).")
    meta = _load_restricted(path / CIFAR_META, f"{source}/{CIFAR_META}")
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(v, (bytes, str)) for v in names):
        raise ArtifactError(f"{source}/{CIFAR_META}: has no list of 10 'label_names'; re-download the 'python version' files.")
    class_names = tuple(_text(v) if isinstance(v, bytes) else v for v in names)
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):  # report a missing batch before reading any
        if not (path / name).is_file():
            raise ArtifactError(f"{source}/{name}: CIFAR-10 batch file not found; the folder must hold data_batch_1..5 and "
                                "test_batch, so re-download or unpack the 'python version'.")
    xs, ys, tests = [], [], []
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        shown = f"{source}/{name}"
        batch = _load_restricted(path / name, shown)
        if not isinstance(batch, dict):
            raise ArtifactError(f"{shown}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; re-download the files.")
        data, labels = _get(batch, "data"), _get(batch, "labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ArtifactError(f"{shown}: entry 'data' is {got}, not a uint8 array of shape (n, 3072); re-download the files.")
        try:
            labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise ArtifactError(f"{shown}: entry 'labels' is not a list of integers; re-download the files.") from None
        if labels.shape[0] != data.shape[0]:
            raise ArtifactError(f"{shown}: has {data.shape[0]} images but {labels.shape[0]} labels; re-download the files.")
        bad = (labels < 0) | (labels > 9)
        if bad.any():
            raise ArtifactError(f"{shown}: entry 'labels' has {int(bad.sum())} labels out of range [0, 10) "
                                f"(e.g. {int(labels[bad][0])}); re-download the files.")
        xs.append(data)
        ys.append(labels)
        tests.append(np.full(data.shape[0], name == CIFAR_TEST_BATCH))
    raw = np.concatenate(xs).reshape(-1, 3, 32, 32)
    x = raw.astype(np.float32) / np.float32(255.0)
    if spec.grayscale:
        x = np.tensordot(x, _LUMA, axes=([1], [0]))[:, None].astype(np.float32)
    return (x, np.concatenate(ys), "entry 'data'", "entry 'labels'", tuple(x.shape[1:]), "the CIFAR-10 layout",
            class_names, np.concatenate(tests))


# --------------------------------------------------------------------------------------------------
# MNIST-1D (regenerated, never downloaded)


def _read_mnist1d(spec: DataSourceParams, seed: int):
    source = f"mnist1d(num_samples={spec.mnist1d_samples}, seed={seed})"
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ArtifactError(f"{source}: the mnist1d package cannot be imported ({error}); "
                            "install it with pip install mnist1d==0.0.2.post1.") from None
    args = get_dataset_args()
    args.num_samples = int(spec.mnist1d_samples)
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()  # make_dataset reseeds the global generators
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([np.asarray(data["x"]), np.asarray(data["x_test"])])
    y = np.concatenate([np.asarray(data["y"]), np.asarray(data["y_test"])])
    is_test = np.concatenate([np.zeros(len(data["y"]), bool), np.ones(len(data["y_test"]), bool)])
    return (source, x, y, "the generated sequences", "the generated labels", (1, int(x.shape[1])), "the generator",
            tuple(str(i) for i in range(10)), is_test)


# --------------------------------------------------------------------------------------------------
# entry point


def _subsample(y: np.ndarray, n_classes: int, limit: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = np.zeros(y.shape[0], dtype=bool)
    for c in range(n_classes):
        index = np.flatnonzero(y == c)
        if index.size > limit:
            index = rng.choice(index, size=limit, replace=False)
        keep[index] = True
    return keep


def read_source(spec: DataSourceParams, seed: int = 0) -> ArraySet:
    """Read the data set ``spec`` describes into checked arrays (no unpickling of arbitrary objects, no downloads)."""
    fmt = spec.format
    if fmt == "mnist1d":
        source, *rest = _read_mnist1d(spec, seed)
        x, y, x_name, y_name, image_shape, shape_origin, class_names, is_test = rest
    else:
        if not spec.path:
            raise ArtifactError(f"data.path is not set for format '{fmt}'; set data.path to the file or folder to read.")
        source = str(spec.path)
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise ArtifactError(f"{source}: not found; fix data.path (relative paths start at the working directory).")
        reader = {"npz": _read_npz, "parquet": _read_parquet, "image_folder": _read_image_folder, "cifar10": _read_cifar10}[fmt]
        if fmt in ("npz", "parquet") and path.is_dir():
            raise ArtifactError(f"{source}: is a folder, but format '{fmt}' reads one file; point data.path at the file.")
        x, y, x_name, y_name, image_shape, shape_origin, class_names, is_test = reader(spec, source, path)
        if fmt in ("image_folder", "cifar10") and spec.image_shape is not None and tuple(spec.image_shape) != image_shape:
            raise ArtifactError(f"{source}: data.image_shape is {tuple(spec.image_shape)} but the images read are {image_shape}; "
                                "remove data.image_shape (use data.image_size to resize an image folder).")

    if class_names is not None and spec.n_classes is not None and spec.n_classes != len(class_names):
        raise ArtifactError(f"{source}: data.n_classes is {spec.n_classes} but the source defines {len(class_names)} classes; "
                            "remove data.n_classes or make it agree.")
    n_given = spec.n_classes if class_names is None else len(class_names)
    x, y, n_classes = validate_arrays(x, y, source=source, n_classes=n_given, x_name=x_name, y_name=y_name)
    d = x.shape[1]
    if image_shape is None:
        image_shape = (d,)
    image_shape = tuple(int(v) for v in image_shape)
    if int(np.prod(image_shape)) != d:
        raise ArtifactError(f"{source}: {shape_origin} gives image shape {image_shape} ({int(np.prod(image_shape))} values) "
                            f"but each point has {d} features; fix the image shape or the features.")
    if class_names is None:
        class_names = tuple(str(i) for i in range(n_classes))
    if spec.max_per_class is not None:
        keep = _subsample(y, n_classes, spec.max_per_class, seed)
        if not keep.all():
            x, y = x[keep], y[keep]
            is_test = None if is_test is None else is_test[keep]
    return ArraySet(x=x, y=y, n_classes=n_classes, image_shape=image_shape, class_names=tuple(class_names),
                    is_test=None if is_test is None else np.asarray(is_test, dtype=bool), source=source)
