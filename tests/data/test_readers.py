"""kernelscope.data.readers: every format round-trips exactly, and bad input is refused with one clear sentence."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers import ArraySet, read_source, validate_arrays


def spec(**kwargs) -> DataSourceParams:
    return DataSourceParams(**kwargs)


def refused(match: str):
    return pytest.raises(ArtifactError, match=match)


# --------------------------------------------------------------------------------------------------
# validate_arrays


def test_validate_arrays_returns_float32_int64_and_class_count():
    x, y, k = validate_arrays(
        np.arange(6, dtype=np.int16).reshape(3, 2),
        np.array([0.0, 2.0, 1.0]),
        source="s",
        n_classes=None,
        x_name="array 'x'",
        y_name="array 'y'",
    )
    assert x.dtype == np.float32 and x.shape == (3, 2) and y.dtype == np.int64 and k == 3
    assert np.array_equal(x, [[0, 1], [2, 3], [4, 5]]) and np.array_equal(y, [0, 2, 1])
    _, _, k = validate_arrays(np.ones((2, 2, 2)), [0, 1], source="s", n_classes=5, x_name="x", y_name="y")
    assert k == 5


@pytest.mark.parametrize(
    "x, y, n_classes, message",
    [
        (np.zeros((0, 3)), np.zeros(0, int), None, r"s: array 'x' is empty \(no rows\)"),
        (np.zeros((3, 2)), np.array([0, 1]), None, r"array 'x' has 3 rows but array 'y' has 2"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), None, r"array 'x' has dtype <U1, which is not numeric"),
        (
            np.array([[1.0, np.nan], [np.inf, 2.0], [np.nan, 0.0]]),
            np.array([0, 1, 1]),
            None,
            r"array 'x' has 2 NaN and 1 infinite values \(first in row 0\)",
        ),
        (
            np.array([[1.0], [2.0], [-np.inf]]),
            np.array([0, 1, 1]),
            None,
            r"0 NaN and 1 infinite values \(first in row 2\)",
        ),
        (np.array([[1e300], [1.0]]), np.array([0, 1]), None, r"beyond the float32 range \(first in row 0\)"),
        (
            np.ones((3, 1)),
            np.array([0.0, 1.5, 1.0]),
            None,
            r"array 'y' is not integer-valued \(1 labels, e.g. 1.5 in row 1\)",
        ),
        (np.ones((3, 1)), np.array(["a", "b", "a"]), None, r"array 'y' has dtype <U1, which is not integer labels"),
        (
            np.ones((4, 1)),
            np.array([0, 12, 1, 10]),
            10,
            r"array 'y' has 2 labels out of range \[0, 10\) \(e.g. 12\); fix the labels or set data.n_classes",
        ),
        (np.ones((3, 1)), np.array([0, -1, 1]), None, r"1 negative labels \(e.g. -1\)"),
        (np.ones((3, 1)), np.array([0, -1, 1]), 2, r"out of range \[0, 2\) \(e.g. -1\)"),
        (np.ones((3, 1)), np.array([2, 2, 2]), None, r"holds only one class \(label 2\)"),
        (np.ones((3, 1)), np.array([0, 0, 0]), None, r"gives a class count of 1"),
        (np.ones((3, 1)), np.array([0, 0, 0]), 1, r"data.n_classes is 1, but a classifier needs at least 2"),
        (np.ones((3, 0)), np.array([0, 1, 1]), None, r"has no features"),
        (np.ones((2, 1)), np.array([[0, 1], [1, 0]]), None, r"array 'y' has shape \(2, 2\), not \(n,\)"),
    ],
)
def test_validate_arrays_refuses(x, y, n_classes, message):
    with refused(message):
        validate_arrays(x, y, source="s", n_classes=n_classes, x_name="array 'x'", y_name="array 'y'")


# --------------------------------------------------------------------------------------------------
# npz


def test_npz_images_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = read_source(spec(format="npz", path=str(tmp_path / "d.npz")))
    assert isinstance(s, ArraySet)
    assert s.image_shape == (1, 4, 5) and s.x.shape == (6, 20) and s.x.dtype == np.float32
    assert np.array_equal(s.x, x.reshape(6, -1).astype(np.float32))
    assert np.array_equal(s.y, y) and s.y.dtype == np.int64
    assert s.n_classes == 3 and s.class_names == ("0", "1", "2") and s.is_test is None
    assert s.source == str(tmp_path / "d.npz")


def test_npz_flat_with_image_shape_split_and_keys(tmp_path):
    x = np.arange(4 * 12, dtype=np.float64).reshape(4, 12) / 7
    np.savez(
        tmp_path / "d.npz",
        feats=x,
        labels=np.array([1, 0, 1, 0]),
        image_shape=np.array([3, 2, 2]),
        split=np.array(["train", "test", "train", "test"]),
    )
    s = read_source(spec(format="npz", path=str(tmp_path / "d.npz"), x_key="feats", y_key="labels", n_classes=4))
    assert s.image_shape == (3, 2, 2) and s.n_classes == 4 and s.class_names == ("0", "1", "2", "3")
    assert np.array_equal(s.x, x.astype(np.float32))
    assert np.array_equal(s.is_test, [False, True, False, True])


def test_npz_4d_must_match_spec_image_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4, 3)), y=np.array([0, 1]))
    s = read_source(spec(format="npz", path=str(tmp_path / "d.npz")))
    assert s.image_shape == (4, 4, 3)
    with refused(r"per-point shape \(4, 4, 3\) but data.image_shape is \(3, 4, 4\)"):
        read_source(spec(format="npz", path=str(tmp_path / "d.npz"), image_shape=(3, 4, 4)))


class _Payload:
    """Pickles as a call that creates a file; reading it must never run that call."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _OpenPayload(_Payload):
    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    pwned = tmp_path / "pwned"
    np.savez(tmp_path / "d.npz", x=np.array([_Payload(pwned), _Payload(pwned)], dtype=object), y=np.array([0, 1]))
    assert not pwned.exists()
    with refused(r"d.npz: array 'x' is an object \(pickled\) array, which is not loaded"):
        read_source(spec(format="npz", path=str(tmp_path / "d.npz")))
    assert not pwned.exists()


@pytest.mark.parametrize(
    "arrays, kwargs, message",
    [
        (
            {"x": np.zeros((2, 2)), "y": np.array([0, 1])},
            {"x_key": "feats"},
            r"has no array 'feats' \(arrays: x, y\); set data.x_key",
        ),
        (
            {"x": np.array([[0.0, np.nan], [1, 1]]), "y": np.array([0, 1])},
            {},
            r"array 'x' has 1 NaN and 0 infinite values \(first in row 0\)",
        ),
        (
            {"x": np.zeros((3, 2)), "y": np.array([0, 1, 5])},
            {"n_classes": 3},
            r"array 'y' has 1 labels out of range \[0, 3\) \(e.g. 5\)",
        ),
        ({"x": np.zeros((2, 2)), "y": np.array([1, 1])}, {}, r"holds only one class"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, {}, r"is empty"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, {}, r"array 'x' has 3 rows but array 'y' has 2"),
        (
            {"x": np.zeros((2, 2)), "y": np.array([0, 1]), "split": np.array(["train", "val"])},
            {},
            r"array 'split' has 1 values other than 'train' and 'test' \(e.g. 'val'\)",
        ),
        (
            {"x": np.zeros((2, 6)), "y": np.array([0, 1]), "image_shape": np.array([1, 2, 2])},
            {},
            r"array 'image_shape' gives image shape \(1, 2, 2\) \(4 values\) but each point has 6 features",
        ),
    ],
)
def test_npz_refuses(tmp_path, arrays, kwargs, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with refused(message):
        read_source(spec(format="npz", path=str(tmp_path / "d.npz"), **kwargs))


def test_missing_and_unreadable_files(tmp_path):
    with refused(r"nope.npz: not found; fix data.path"):
        read_source(spec(format="npz", path=str(tmp_path / "nope.npz")))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with refused(r"bad.npz: not a readable .npz archive"):
        read_source(spec(format="npz", path=str(tmp_path / "bad.npz")))
    with refused(r"data.path is not set for format 'parquet'"):
        read_source(spec(format="parquet"))


# --------------------------------------------------------------------------------------------------
# parquet


def test_parquet_feature_columns(tmp_path):
    table = pa.table(
        {
            "a": [0.5, 1.5, 2.5],
            "b": pa.array([1, 2, 3], pa.int8()),
            "name": ["p", "q", "r"],
            "label": pa.array([1, 0, 1], pa.int32()),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    s = read_source(spec(format="parquet", path=str(tmp_path / "d.parquet"), feature_columns=("b", "a")))
    assert np.array_equal(s.x, [[1, 0.5], [2, 1.5], [3, 2.5]]) and np.array_equal(s.y, [1, 0, 1])
    assert s.image_shape == (2,) and s.n_classes == 2 and s.is_test is None
    # default: every numeric column but the label (the string column is skipped)
    s = read_source(spec(format="parquet", path=str(tmp_path / "d.parquet")))
    assert np.array_equal(s.x, [[0.5, 1], [1.5, 2], [2.5, 3]])
    with refused(r"feature column 'name' has type string, not a number"):
        read_source(spec(format="parquet", path=str(tmp_path / "d.parquet"), feature_columns=("a", "name")))
    with refused(r"has no column 'lbl' \(columns: a, b, name, label\); set data.label_column"):
        read_source(spec(format="parquet", path=str(tmp_path / "d.parquet"), label_column="lbl"))


def test_parquet_list_features_with_metadata_shape_and_split(tmp_path):
    pixels = np.arange(3 * 8, dtype=np.uint8).reshape(3, 8)
    schema = pa.schema(
        [("features", pa.list_(pa.uint8())), ("label", pa.int64()), ("split", pa.string())],
        metadata={b"image_shape": json.dumps([2, 2, 2]).encode()},
    )
    table = pa.table(
        {"features": [list(map(int, r)) for r in pixels], "label": [0, 1, 2], "split": ["train", "train", "test"]},
        schema=schema,
    )
    pq.write_table(table, tmp_path / "d.parquet")
    s = read_source(spec(format="parquet", path=str(tmp_path / "d.parquet")))
    assert s.image_shape == (2, 2, 2) and np.array_equal(s.x, pixels.astype(np.float32))
    assert np.array_equal(s.is_test, [False, False, True]) and s.n_classes == 3
    with refused(r"data.image_shape gives image shape \(3, 2, 2\) \(12 values\) but each point has 8 features"):
        read_source(spec(format="parquet", path=str(tmp_path / "d.parquet"), image_shape=(3, 2, 2)))


def test_parquet_fixed_size_list_and_row_length_errors(tmp_path):
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
    pq.write_table(pa.table({"features": fixed, "label": [0, 1]}), tmp_path / "f.parquet")
    s = read_source(spec(format="parquet", path=str(tmp_path / "f.parquet")))
    assert np.array_equal(s.x, [[0, 1, 2], [3, 4, 5]]) and s.image_shape == (3,)

    pq.write_table(pa.table({"features": [[1.0, 2.0], [1.0, 2.0], [3.0]], "label": [0, 1, 0]}), tmp_path / "v.parquet")
    with refused(r"column 'features' has rows of different lengths \(row 0: 2, row 2: 1\)"):
        read_source(spec(format="parquet", path=str(tmp_path / "v.parquet")))

    pq.write_table(pa.table({"a": [1.0, None, 2.0], "label": [0, 1, 0]}), tmp_path / "n.parquet")
    with refused(r"column 'a' has 1 missing \(null\) values"):
        read_source(spec(format="parquet", path=str(tmp_path / "n.parquet")))

    pq.write_table(pa.table({"a": [1.0, 2.0], "label": [0.0, 0.5]}), tmp_path / "l.parquet")
    with refused(r"column 'label' is not integer-valued"):
        read_source(spec(format="parquet", path=str(tmp_path / "l.parquet")))


# --------------------------------------------------------------------------------------------------
# image folder


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image_folder(root, size=(3, 4)):
    rng = np.random.default_rng(1)
    images = {}
    for cls, count in (("cat", 2), ("ant", 1), ("dog", 2)):
        for i in range(count):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            _write_png(root / cls / f"{i}.png", arr)
            images[(cls, i)] = arr
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: skipped
    return images


def test_image_folder_round_trip(tmp_path):
    images = _image_folder(tmp_path / "imgs")
    s = read_source(spec(format="image_folder", path=str(tmp_path / "imgs")))
    assert s.class_names == ("ant", "cat", "dog") and s.n_classes == 3 and s.image_shape == (3, 3, 4)
    order = [("ant", 0), ("cat", 0), ("cat", 1), ("dog", 0), ("dog", 1)]
    assert np.array_equal(s.y, [0, 1, 1, 2, 2])
    expected = np.stack([images[k].transpose(2, 0, 1).reshape(-1) for k in order]).astype(np.float32) / np.float32(255)
    assert np.array_equal(s.x, expected) and s.is_test is None

    g = read_source(spec(format="image_folder", path=str(tmp_path / "imgs"), grayscale=True, image_size=(2, 5)))
    assert g.image_shape == (1, 2, 5)
    want = np.asarray(Image.fromarray(images[("ant", 0)]).convert("L").resize((5, 2), Image.Resampling.BILINEAR))
    assert np.array_equal(g.x[0], want.reshape(-1).astype(np.float32) / np.float32(255))

    with refused(r"data.n_classes is 5 but the source defines 3 classes"):
        read_source(spec(format="image_folder", path=str(tmp_path / "imgs"), n_classes=5))


def test_image_folder_refuses_corrupt_and_mixed_sizes(tmp_path):
    root = tmp_path / "imgs"
    _image_folder(root)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with refused(r"imgs/dog/broken.png: Pillow cannot read this file as an image"):
        read_source(spec(format="image_folder", path=str(root)))
    (root / "dog" / "broken.png").unlink()
    _write_png(root / "dog" / "big.png", np.zeros((6, 7, 3), np.uint8))
    with refused(
        r"images differ in size \(.*imgs/ant/0.png is 3x4 but .*imgs/dog/big.png is 6x7 \(height x width\)\); "
        r"set data.image_size"
    ):
        read_source(spec(format="image_folder", path=str(root)))
    s = read_source(spec(format="image_folder", path=str(root), image_size=(3, 4)))
    assert s.x.shape == (6, 36)
    with refused(r"has 1 class subfolders \(only\)"):
        _write_png(tmp_path / "one" / "only" / "a.png", np.zeros((2, 2, 3), np.uint8))
        read_source(spec(format="image_folder", path=str(tmp_path / "one")))


# --------------------------------------------------------------------------------------------------
# CIFAR-10


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 'str' (BINSTRING) and uses the old numpy.core module name,
    like the official files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _dump(obj, path, protocol):
    if protocol == "py2":
        import io

        buffer = io.BytesIO()
        _Py2Pickler(buffer, protocol=2).dump(obj)
        raw = buffer.getvalue().replace(
            b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
        )
        assert b"numpy._core" not in raw
        path.write_bytes(raw)
    else:
        with open(path, "wb") as handle:
            pickle.dump(obj, handle, protocol=protocol)


NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _cifar(root, protocol=pickle.DEFAULT_PROTOCOL, rows=(3, 2, 2, 1, 2, 3)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, rows):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batches[name] = (data, labels)
        _dump(
            {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
            },
            root / name,
            protocol,
        )
    _dump({b"num_cases_per_batch": 10000, b"label_names": NAMES, b"num_vis": 3072}, root / "batches.meta", protocol)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5, "py2"])
def test_cifar10_round_trip(tmp_path, protocol):
    batches = _cifar(tmp_path / "cifar-10-batches-py", protocol)
    s = read_source(spec(format="cifar10", path=str(tmp_path / "cifar-10-batches-py")))
    data = np.concatenate([d for d, _ in batches.values()])
    labels = np.concatenate([batch_labels for _, batch_labels in batches.values()])
    assert s.image_shape == (3, 32, 32) and s.x.shape == (13, 3072) and s.n_classes == 10
    assert np.array_equal(s.x, data.astype(np.float32) / np.float32(255))
    assert np.array_equal(s.y, labels) and s.class_names == tuple(n.decode() for n in NAMES)
    assert np.array_equal(s.is_test, [False] * 10 + [True] * 3)


def test_cifar10_grayscale_and_max_per_class(tmp_path):
    batches = _cifar(tmp_path / "c", rows=(30, 30, 30, 30, 30, 30))
    g = read_source(spec(format="cifar10", path=str(tmp_path / "c"), grayscale=True))
    rgb = batches["data_batch_1"][0][0].reshape(3, 32, 32).astype(np.float32) / 255
    assert g.image_shape == (1, 32, 32)
    np.testing.assert_allclose(g.x[0], (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).reshape(-1), atol=1e-6)

    full = read_source(spec(format="cifar10", path=str(tmp_path / "c")))
    a = read_source(spec(format="cifar10", path=str(tmp_path / "c"), max_per_class=4), seed=5)
    b = read_source(spec(format="cifar10", path=str(tmp_path / "c"), max_per_class=4), seed=5)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and np.array_equal(a.is_test, b.is_test)
    counts = np.bincount(a.y, minlength=10)
    assert np.array_equal(counts, np.minimum(np.bincount(full.y, minlength=10), 4))
    # rows keep their original order: each kept row is found in the full set at increasing positions
    rows = [int(np.flatnonzero((full.x == row).all(axis=1))[0]) for row in a.x]
    assert rows == sorted(rows) and np.array_equal(full.is_test[rows], a.is_test)


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize(
    "payload, glob", [(_Payload, r"'(posix|os|nt)\.system'"), (_OpenPayload, r"'(io|builtins)\.open'")]
)
def test_cifar10_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol, payload, glob):
    root = tmp_path / "c"
    _cifar(root)
    pwned = tmp_path / "pwned"
    _dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [payload(pwned)]}, root / "data_batch_2", protocol)
    with refused(rf"c/data_batch_2: the pickle asks to load the global {glob}, which is refused"):
        read_source(spec(format="cifar10", path=str(root)))
    assert not pwned.exists()


def test_cifar10_refuses_object_arrays_and_bad_content(tmp_path):
    root = tmp_path / "c"
    _cifar(root)
    _dump({b"data": np.array([1, "a"], dtype=object), b"labels": [0]}, root / "data_batch_3", 2)
    with refused(r"c/data_batch_3: holds an array of dtype 'O8', which is not read"):
        read_source(spec(format="cifar10", path=str(root)))
    _dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, root / "data_batch_3", 2)
    with refused(r"c/data_batch_3: entry 'labels' has 1 labels out of range \[0, 10\) \(e.g. 10\)"):
        read_source(spec(format="cifar10", path=str(root)))
    _dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, root / "data_batch_3", 2)
    with refused(r"c/data_batch_3: entry 'data' is uint8 \(2, 100\), not a uint8 array of shape \(n, 3072\)"):
        read_source(spec(format="cifar10", path=str(root)))
    (root / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with refused(r"c/data_batch_3: not a readable CIFAR-10 pickle"):
        read_source(spec(format="cifar10", path=str(root)))


def test_cifar10_missing_batch(tmp_path):
    root = tmp_path / "c"
    _cifar(root)
    (root / "data_batch_4").unlink()
    with refused(r"c/data_batch_4: CIFAR-10 batch file not found"):
        read_source(spec(format="cifar10", path=str(root)))
    (root / "batches.meta").unlink()
    with refused(r"c/batches.meta: file not found"):
        read_source(spec(format="cifar10", path=str(root)))


# --------------------------------------------------------------------------------------------------
# MNIST-1D


def test_mnist1d_is_generated_deterministically_without_download(tmp_path, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must not download")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = read_source(spec(format="mnist1d", mnist1d_samples=100), seed=3)
    assert np.array_equal(np.random.get_state()[1], before)  # the global generator is left as it was
    b = read_source(spec(format="mnist1d", mnist1d_samples=100), seed=3)
    c = read_source(spec(format="mnist1d", mnist1d_samples=100), seed=4)
    assert a.x.shape == (100, 40) and a.image_shape == (1, 40) and np.isfinite(a.x).all()
    assert a.n_classes == 10 and set(a.y.tolist()) == set(range(10)) and a.class_names == tuple("0123456789")
    assert a.is_test.sum() == 20 and not a.is_test[:80].any()
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert list(tmp_path.iterdir()) == []  # no cached pickle written
