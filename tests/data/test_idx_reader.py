"""kernelscope.data.readers.idx: MNIST-style IDX folders round-trip exactly, plain or gzip, with their own
train/test split, and every malformed file is refused with one clear sentence (tiny files written here)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers import read_source
from kernelscope.data.readers.idx import read_idx_file

_TYPE_BYTES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array: np.ndarray, *, dims: tuple[int, ...] | None = None, type_byte: int | None = None) -> bytes:
    """An IDX file's bytes: 00 00, type byte, ndim, big-endian uint32 dims, big-endian data (dims may lie)."""
    array = np.asarray(array)
    dims = array.shape if dims is None else dims
    type_byte = _TYPE_BYTES[array.dtype.str[1:]] if type_byte is None else type_byte
    header = bytes([0, 0, type_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array=None, *, raw: bytes | None = None, compress: bool = False, **kwargs):
    data = idx_bytes(array, **kwargs) if raw is None else raw
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def mnist_folder(root, *, n=(6, 4), compress=True, split=True, rows=3, cols=2, seed=0):
    """A tiny MNIST-style folder: train-*/t10k-* pairs (or one unnamed pair); returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    written = {}
    for role, count in zip(("train", "t10k") if split else ("",), n):
        prefix = f"{role}-" if role else ""
        x = rng.integers(0, 256, size=(count, rows, cols), dtype=np.uint8)
        y = (np.arange(count) % 3).astype(np.uint8)
        write_idx(root / f"{prefix}images-idx3-ubyte{suffix}", x, compress=compress)
        write_idx(root / f"{prefix}labels-idx1-ubyte{suffix}", y, compress=compress)
        written[role] = (x, y)
    return written


def spec(root, **kwargs) -> DataSourceParams:
    return DataSourceParams(format="idx", path=str(root), **kwargs)


def refused(match: str):
    return pytest.raises(ArtifactError, match=match)


@pytest.mark.parametrize("compress", [True, False])
def test_single_pair_round_trip(tmp_path, compress):
    (x, y) = mnist_folder(tmp_path / "m", n=(5,), compress=compress, split=False)[""]
    s = read_source(spec(tmp_path / "m"))
    assert s.image_shape == (1, 3, 2) and s.x.shape == (5, 6) and s.x.dtype == np.float32
    assert np.array_equal(s.x, x.reshape(5, -1).astype(np.float32) / np.float32(255.0))
    assert s.x.min() >= 0.0 and s.x.max() <= 1.0
    assert np.array_equal(s.y, y) and s.y.dtype == np.int64
    assert s.n_classes == 3 and s.class_names == ("0", "1", "2") and s.is_test is None
    assert s.source == str(tmp_path / "m")


@pytest.mark.parametrize("compress", [True, False])
def test_train_and_t10k_pairs_are_the_source_split(tmp_path, compress):
    written = mnist_folder(tmp_path / "m", n=(6, 4), compress=compress)
    s = read_source(spec(tmp_path / "m", n_classes=10))
    x = np.concatenate([written["train"][0], written["t10k"][0]]).reshape(10, -1)
    assert np.array_equal(s.x, x.astype(np.float32) / np.float32(255.0))
    assert np.array_equal(s.y, np.concatenate([written["train"][1], written["t10k"][1]]))
    assert np.array_equal(s.is_test, [False] * 6 + [True] * 4) and s.n_classes == 10
    sub = read_source(spec(tmp_path / "m", max_per_class=1))
    assert sub.x.shape == (3, 6) and sub.is_test.shape == (3,)


def test_test_named_pair_mixed_compression_and_other_files(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    write_idx(root / "train-images.idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    write_idx(root / "train-labels.idx1-ubyte.gz", np.array([0, 1], np.uint8), compress=True)
    write_idx(root / "test-images.idx3-ubyte.gz", np.full((1, 2, 2), 255, np.uint8), compress=True)
    write_idx(root / "test-labels.idx1-ubyte", np.array([1], np.uint8))
    (root / "README.txt").write_text("not data")
    s = read_source(spec(root))
    assert np.array_equal(s.is_test, [False, False, True]) and s.x[2].tolist() == [1.0] * 4


def test_gzip_is_told_by_its_bytes_not_its_name(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    write_idx(root / "images-idx3-ubyte", np.ones((2, 1, 1), np.uint8), compress=True)  # gzip, no .gz
    write_idx(root / "labels-idx1-ubyte.gz", np.array([0, 1], np.uint8))  # plain, named .gz
    assert np.array_equal(read_source(spec(root)).x, np.full((2, 1), np.float32(1) / np.float32(255)))


@pytest.mark.parametrize("dtype", [">i1", ">i2", ">i4", ">f4", ">f8"])
def test_other_idx_types_keep_their_values(tmp_path, dtype):
    values = np.array([[-3, 7], [120, 0]], dtype=np.dtype(dtype).newbyteorder("=")).reshape(2, 1, 2)
    path = write_idx(tmp_path / "a-idx3-ubyte", values)
    got = read_idx_file(path, "a", 3)
    assert got.dtype == values.dtype and np.array_equal(got, values)


def test_image_shape_must_agree_and_path_must_exist(tmp_path):
    mnist_folder(tmp_path / "m", n=(4,), split=False)
    with refused(r"data.image_shape is \(1, 2, 3\) but the images read are \(1, 3, 2\)"):
        read_source(spec(tmp_path / "m", image_shape=(1, 2, 3)))
    with refused(r"nope: not found; fix data.path"):
        read_source(spec(tmp_path / "nope"))
    with refused(r"data.path is not set for format 'idx'"):
        read_source(DataSourceParams(format="idx"))
    with refused(r"m/images-idx3-ubyte.gz: is not a folder; point data.path at the folder"):
        read_source(spec(tmp_path / "m" / "images-idx3-ubyte.gz"))


def test_folder_refusals(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    with refused(r"m: holds no images file \(a name with 'idx3'"):
        read_source(spec(root))
    write_idx(root / "images-idx3-ubyte", np.zeros((2, 1, 1), np.uint8))
    with refused(r"m: holds no labels file \(a name with 'idx1'"):
        read_source(spec(root))
    write_idx(root / "labels-idx1-ubyte", np.array([0, 1], np.uint8))
    write_idx(root / "images-idx3-ubyte.gz", np.zeros((2, 1, 1), np.uint8), compress=True)
    with refused(r"holds 2 images files \(images-idx3-ubyte, images-idx3-ubyte.gz\) where one"):
        read_source(spec(root))
    (root / "images-idx3-ubyte.gz").unlink()
    (root / "images-idx3-ubyte").rename(root / "train-images-idx3-ubyte")
    with refused(r"labels files \(labels-idx1-ubyte\) do not pair up by their train/t10k/test names"):
        read_source(spec(root))
    write_idx(root / "labels-idx1-ubyte", np.array([0, 1, 1], np.uint8))
    (root / "labels-idx1-ubyte").rename(root / "train-labels-idx1-ubyte")
    with refused(r"train-images-idx3-ubyte holds 2 images but train-labels-idx1-ubyte holds 3 labels"):
        read_source(spec(root))


def test_train_and_test_image_sizes_must_agree(tmp_path):
    root = tmp_path / "m"
    mnist_folder(root)
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((4, 2, 2), np.uint8), compress=True)
    with refused(r"train-images-idx3-ubyte.gz holds 3x2 images but t10k-images-idx3-ubyte.gz holds 2x2"):
        read_source(spec(root))


_IMAGES = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
_HEADER = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 2)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "raw, want_ndim, message",
    [
        (b"PK\x03\x04 a zip", 3, r"is not an IDX file \(it starts with bytes 50 4b, not 00 00"),
        (b"\0\0", 3, r"is too short for an IDX header \(2 bytes\)"),
        (bytes([0, 0, 0x0A, 3]), 3, r"has IDX type byte 0x0A, which is none of 0x08, 0x09, 0x0B"),
        (bytes([0, 0, 8, 3, 0, 0]), 3, r"is too short for its IDX header \(6 bytes, .* needs 16\)"),
        (idx_bytes(np.zeros((2, 4), np.uint8)), 3, r"has 2 dimensions \(2, 4\) but needs 3 \(count, rows, columns\)"),
        (idx_bytes(_IMAGES), 1, r"has 3 dimensions \(2, 2, 2\) but needs 1 \(count\) as a labels file"),
        (idx_bytes(np.array([0.0, 1.0], np.float32)), 1, r"holds float32 values, not integer class labels"),
        (_HEADER + bytes(7), 3, r"holds 7 data bytes but its header .*promises 8; the file is truncated"),
        (_HEADER + bytes(10), 3, r"has 2 bytes after the 8 data bytes its header"),
        (  # a header claiming 2**96 bytes is refused by the bytes there, never allocated
            bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(5),
            3,
            r"holds 5 data bytes but its header \(type 0x08, dimensions \(4294967295, 4294967295, 4294967295\)\)",
        ),
    ],
    ids=[
        "magic",
        "short-header",
        "type-byte",
        "short-dims",
        "images-ndim",
        "labels-ndim",
        "float-labels",
        "truncated",
        "trailing",
        "absurd-size",
    ],
)
def test_file_refusals(tmp_path, raw, want_ndim, message, compress):
    path = write_idx(tmp_path / "f-idx3-ubyte", raw=raw, compress=compress)
    if compress:
        message = message.replace(r"\(it starts", r"\(its decompressed data start")
    with refused(r"^x/f-idx3-ubyte: " + message):
        read_idx_file(path, "x/f-idx3-ubyte", want_ndim)


def test_corrupt_and_truncated_gzip_streams(tmp_path):
    good = gzip.compress(idx_bytes(_IMAGES))
    bad_crc = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    cases = (("crc", bad_crc), ("cut", good[: len(good) // 2]), ("junk", b"\x1f\x8b" + b"junk" * 4))
    for name, raw in cases:
        path = tmp_path / f"{name}-idx3-ubyte.gz"
        path.write_bytes(raw)
        with refused(rf"^{name}-idx3-ubyte.gz: is a corrupt or truncated gzip stream \(.*\); re-download"):
            read_idx_file(path, path.name, 3)


def test_a_bad_file_is_named_through_read_source(tmp_path):
    root = tmp_path / "m"
    mnist_folder(root, split=False, n=(3,))
    (root / "labels-idx1-ubyte.gz").write_bytes(gzip.compress(_HEADER))
    with refused(r"m/labels-idx1-ubyte.gz: has 3 dimensions"):
        read_source(spec(root))
