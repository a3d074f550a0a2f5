"""IDX folders (MNIST, Fashion-MNIST, KMNIST, EMNIST): an images file ('idx3' in its name) and a labels file
('idx1'), plain or gzip-compressed, parsed with numpy; a train-* and a t10k-*/test-* pair are the source's split.

IDX is big-endian: two zero bytes, a type byte, the number of dimensions, one uint32 per dimension, then the
values in C order. Nothing is read beyond what the header promises, and the promise is checked against the
bytes actually there before anything of that size is allocated.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, register_reader

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # gzip data are read in pieces, so a header's false promise never allocates its size
_TEST_WORDS = ("t10k", "test")


def _role(name: str) -> str | None:
    """'train', 'test' or None (no split named), from the words of a file name."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    if "train" in words:
        return "train"
    return "test" if any(w in words for w in _TEST_WORDS) else None


def _find(folder: Path, source: str, tag: str, what: str) -> dict[str | None, Path]:
    """The files of ``folder`` with ``tag`` ('idx3' or 'idx1') in their name, by role: one, or a train and a test."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and tag in p.name.lower())
    example = f"train-{what}-{tag}-ubyte.gz"
    if not found:
        raise ArtifactError(
            f"{source}: holds no {what} file (a name with '{tag}', e.g. {example}); "
            "put the IDX images and labels files in this folder or point data.path at the folder that holds them."
        )
    by_role = {_role(p.name): p for p in found}
    if len(found) > 1 and not (len(found) == 2 and set(by_role) == {"train", "test"}):
        raise ArtifactError(
            f"{source}: holds {len(found)} {what} files ({', '.join(p.name for p in found)}) where one, or one "
            "train-* and one t10k-*/test-*, is expected; move the others (e.g. an unpacked copy of a .gz) "
            "out of the folder."
        )
    return by_role


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, in pieces (fewer when the stream ends first), never allocating n up front."""
    parts, left = [], n
    while left > 0:
        part = stream.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _count_rest(stream: BinaryIO) -> int:
    total = 0
    while part := stream.read(_CHUNK):
        total += len(part)
    return total


def _parse(stream: BinaryIO, shown: str, size: int | None, compressed: bool, want_ndim: int) -> np.ndarray:
    """The array of one IDX stream; ``size`` is the stream's byte count when known (a plain file)."""
    head = _read_exactly(stream, 4)
    if len(head) >= 2 and head[:2] != b"\0\0":
        where = "its decompressed data start" if compressed else "it starts"
        neither = "" if compressed else ", and it is not gzip-compressed (1f 8b) either"
        raise ArtifactError(
            f"{shown}: is not an IDX file ({where} with bytes {head[:2].hex(' ')}, not 00 00{neither}); "
            "point data.path at a folder of IDX files such as train-images-idx3-ubyte.gz."
        )
    if len(head) < 4:
        raise ArtifactError(f"{shown}: is too short for an IDX header ({len(head)} bytes); re-download the file.")
    kind, ndim = head[2], head[3]
    if kind not in IDX_TYPES:
        known = ", ".join(f"0x{k:02X}" for k in IDX_TYPES)
        raise ArtifactError(
            f"{shown}: has IDX type byte 0x{kind:02X}, which is none of {known}; "
            "re-download the file or fix its header."
        )
    raw_dims = _read_exactly(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ArtifactError(
            f"{shown}: is too short for its IDX header ({4 + len(raw_dims)} bytes, the header of {ndim} "
            f"dimensions needs {4 + 4 * ndim}); re-download the file."
        )
    dims = tuple(int(v) for v in np.frombuffer(raw_dims, dtype=">u4"))
    if ndim != want_ndim:
        need = "3 (count, rows, columns) as an images file" if want_ndim == 3 else "1 (count) as a labels file"
        raise ArtifactError(
            f"{shown}: has {ndim} dimensions {dims} but needs {need}; check that the idx3 and idx1 files are "
            "the images and labels of an MNIST-style set."
        )
    dtype = np.dtype(IDX_TYPES[kind])
    if want_ndim == 1 and dtype.kind == "f":
        raise ArtifactError(
            f"{shown}: holds {dtype.name} values, not integer class labels; use an idx1 labels file of integers "
            "(type 0x08, unsigned byte, as MNIST's)."
        )
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize  # Python ints: no overflow on absurd headers
    promise = f"its header (type 0x{kind:02X}, dimensions {dims}) promises {expected}"
    got = None if size is None else size - 4 - 4 * ndim  # a plain file is checked before its data are read
    if got is None or got >= expected:
        data = _read_exactly(stream, expected)
        got = len(data) if got is None else got
    if got < expected:
        raise ArtifactError(f"{shown}: holds {got} data bytes but {promise}; the file is truncated, so re-download it.")
    extra = got - expected if size is not None else _count_rest(stream)
    if extra:
        raise ArtifactError(
            f"{shown}: has {extra} bytes after the {expected} data bytes {promise}; re-download the file."
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_file(path: Path, shown: str, want_ndim: int) -> np.ndarray:
    """One IDX file (gzip-compressed or not, told by its first bytes) as a native-endian array of its dims."""
    try:
        with path.open("rb") as file:
            compressed = file.read(2) == GZIP_MAGIC
            file.seek(0)
            if not compressed:
                return _parse(file, shown, path.stat().st_size, False, want_ndim)
            with gzip.GzipFile(fileobj=file, mode="rb") as stream:
                return _parse(stream, shown, None, True, want_ndim)
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise ArtifactError(
            f"{shown}: is a corrupt or truncated gzip stream ({error.__class__.__name__}: {error}); "
            "re-download the file (gunzip -t checks it)."
        ) from None
    except OSError as error:
        raise ArtifactError(
            f"{shown}: cannot be read ({error.__class__.__name__}: {error}); check the file's permissions."
        ) from None


@register_reader("idx", path="folder", image_shape_from_data=True)
def read_idx(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    if not path.is_dir():
        raise ArtifactError(
            f"{source}: is not a folder; point data.path at the folder holding the IDX files "
            "(e.g. train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz)."
        )
    images = _find(path, source, "idx3", "images")
    labels = _find(path, source, "idx1", "labels")
    if set(images) != set(labels):
        raise ArtifactError(
            f"{source}: the images files ({', '.join(p.name for p in images.values())}) and labels files "
            f"({', '.join(p.name for p in labels.values())}) do not pair up by their train/t10k/test names; "
            "keep one images and one labels file of each split."
        )
    roles = ["train", "test"] if len(images) == 2 else list(images)
    xs, ys, tests, first = [], [], [], None
    for role in roles:
        image_path, label_path = images[role], labels[role]
        x = read_idx_file(image_path, f"{source}/{image_path.name}", 3)
        y = read_idx_file(label_path, f"{source}/{label_path.name}", 1)
        if x.shape[0] != y.shape[0]:
            raise ArtifactError(
                f"{source}: {image_path.name} holds {x.shape[0]} images but {label_path.name} holds "
                f"{y.shape[0]} labels; use the labels file of the same set (or re-download both)."
            )
        if first is not None and x.shape[1:] != first[1]:
            (h0, w0), (h1, w1) = first[1], x.shape[1:]
            raise ArtifactError(
                f"{source}: {first[0]} holds {h0}x{w0} images but {image_path.name} holds {h1}x{w1} "
                "(rows x columns); use the train and test files of one data set."
            )
        first = first or (image_path.name, x.shape[1:])
        xs.append(x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x)
        ys.append(y)
        tests.append(np.full(x.shape[0], role == "test"))
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    y = ys[0] if len(ys) == 1 else np.concatenate(ys)
    shown = " and ".join(images[r].name for r in roles)
    return RawArrays(
        x[:, None],
        y,
        f"the images of {shown}",
        f"the labels of {' and '.join(labels[r].name for r in roles)}",
        (1, *(int(v) for v in x.shape[1:])),
        "the IDX header",
        None,
        np.concatenate(tests) if len(roles) == 2 else None,
    )
