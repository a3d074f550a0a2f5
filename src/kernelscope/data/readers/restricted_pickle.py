"""The only unpickler in the library: rebuilds numeric numpy arrays (and plain Python containers) from a pickle
and refuses every other global, so reading a CIFAR-10 'python version' batch cannot run code."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.errors import ArtifactError

__all__ = ["load_restricted"]

_NUMERIC_DTYPE = re.compile(r"^[biuf]\d{1,2}$")


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, (bytes, bytearray)) else str(value)


class _DTypeStub:
    """Stands in for numpy.dtype while unpickling; resolved to a numeric dtype only."""

    def __init__(self, owner: _RestrictedUnpickler, spec: Any, align: Any = False, copy: Any = False):
        self.owner, self.spec, self.byteorder = owner, _text(spec), "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2:
            self.byteorder = _text(state[1])

    def resolve(self) -> np.dtype:
        if not _NUMERIC_DTYPE.match(self.spec) or self.byteorder not in "<>|=":
            raise ArtifactError(
                f"{self.owner.source}: holds an array of dtype '{self.spec}', which is not read (only "
                "numeric arrays are, so nothing is unpickled); use the official CIFAR-10 'python "
                "version' files."
            )
        try:
            return np.dtype(self.byteorder + self.spec if self.byteorder in "<>" else self.spec)
        except TypeError:
            raise ArtifactError(
                f"{self.owner.source}: holds an array of unknown dtype '{self.spec}'; "
                "use the official CIFAR-10 'python version' files."
            ) from None


def _as_dtype(owner: _RestrictedUnpickler, value: Any) -> np.dtype:
    if not isinstance(value, _DTypeStub):
        raise ArtifactError(
            f"{owner.source}: holds an array whose dtype is not a numpy dtype "
            f"({type(value).__name__}); use the official CIFAR-10 'python version' files."
        )
    return value.resolve()


class _ArrayStub:
    """Stands in for numpy.ndarray while unpickling; built from raw bytes on __setstate__."""

    def __init__(self, owner: _RestrictedUnpickler):
        self.owner, self.array = owner, None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise ArtifactError(
                f"{self.owner.source}: holds a malformed numpy array state; use the official CIFAR-10 files."
            )
        shape, dtype, fortran, raw = state
        dtype = _as_dtype(self.owner, dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise ArtifactError(
                f"{self.owner.source}: holds an array whose data are not raw bytes "
                f"({type(raw).__name__}); use the official CIFAR-10 'python version' files."
            )
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
        raise ArtifactError(
            f"{self.source}: the pickle asks to load the global '{module}.{name}', which is refused "
            "(only numpy array pieces are allowed); this is not a genuine CIFAR-10 batch, so "
            "re-download the 'python version'."
        )

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> _DTypeStub:
        return _DTypeStub(self, spec, align, copy)

    def _reconstruct(self, cls: Any, shape: Any = None, dtype: Any = None) -> _ArrayStub:
        if cls is not _NDARRAY:
            raise ArtifactError(
                f"{self.source}: the pickle rebuilds an array subclass ({cls!r}), which is refused; "
                "use the official CIFAR-10 'python version' files."
            )
        return _ArrayStub(self)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
            raise ArtifactError(
                f"{self.source}: holds an array whose data are not raw bytes; use the official CIFAR-10 files."
            )
        array = np.frombuffer(bytes(buf), dtype=_as_dtype(self, dtype))
        return array.reshape(tuple(int(v) for v in shape), order=_text(order)).copy()

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _as_dtype(self, dtype)
        if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
            raise ArtifactError(f"{self.source}: holds a malformed numpy scalar; use the official CIFAR-10 files.")
        return np.frombuffer(bytes(data), dtype=dtype)[0]

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or _text(encoding).lower().replace("-", "") != "latin1":
            raise ArtifactError(
                f"{self.source}: the pickle calls _codecs.encode with encoding {encoding!r}, which is "
                "refused (only latin1 byte strings are allowed); use the official CIFAR-10 files."
            )
        return text.encode("latin1")


class _Marker:
    """Stands in for the global numpy.ndarray (only usable as _reconstruct's first argument); state cannot be set
    on it."""

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


def load_restricted(path: Path, source: str) -> Any:
    """The pickle at ``path`` with numpy arrays rebuilt from raw bytes; ArtifactError for anything else."""
    if not path.is_file():
        raise ArtifactError(
            f"{source}: file not found; the CIFAR-10 'python version' folder must hold "
            "data_batch_1..5, test_batch and batches.meta."
        )
    try:
        with open(path, "rb") as handle:
            return _materialize(_RestrictedUnpickler(handle, source).load())
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt pickle can raise almost anything
        raise ArtifactError(
            f"{source}: not a readable CIFAR-10 pickle ({error.__class__.__name__}: {error}); "
            "re-download the 'python version' files."
        ) from None
