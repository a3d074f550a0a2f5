"""data.classes: a source's labels kept and relabelled 0..k-1 in the order listed (MNIST2 from MNIST), before
max_per_class, with the source's class names; bad lists refused in one sentence; and the choice reaches the
data's provenance, its content hash and the data task's cache key (tiny arrays written here)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.core.params import params_from_dict
from kernelscope.core.provenance import data_provenance
from kernelscope.core.stage_reads import stage_sections
from kernelscope.data.datasets import dataset_from_arrays
from kernelscope.data.readers import read_source


def write_npz(tmp_path, labels, split=None):
    """Features whose first value is the row number, so kept rows can be traced back."""
    y = np.asarray(labels, dtype=np.int64)
    x = np.stack([np.arange(len(y), dtype=np.float32), y.astype(np.float32)], axis=1)
    path = tmp_path / "toy.npz"
    arrays = {"x": x, "y": y} if split is None else {"x": x, "y": y, "split": np.asarray(split)}
    np.savez(path, **arrays)
    return path


def spec(path, **kwargs) -> DataSourceParams:
    return DataSourceParams(format="npz", path=str(path), **kwargs)


def test_classes_keep_and_relabel_in_the_order_listed(tmp_path):
    path = write_npz(tmp_path, [0, 1, 2, 3, 2, 0, 3, 1, 2])
    arrays = read_source(spec(path, classes=[2, 0]))
    rows = arrays.x[:, 0].astype(int)
    assert rows.tolist() == [0, 2, 4, 5, 8]  # the rows of labels 2 and 0, in the source's order
    assert arrays.y.tolist() == [1, 0, 0, 1, 0]  # label 2 -> class 0, label 0 -> class 1
    assert arrays.x[:, 1].tolist() == [0, 2, 2, 0, 2]  # the original labels, untouched in the features
    assert arrays.n_classes == 2 and arrays.class_names == ("2", "0")
    everything = read_source(spec(path))
    assert everything.n_classes == 4 and everything.class_names == ("0", "1", "2", "3")


def test_classes_keep_the_source_split(tmp_path):
    path = write_npz(tmp_path, [0, 1, 2, 0, 1, 2], split=["train", "train", "train", "test", "test", "test"])
    arrays = read_source(spec(path, classes=[0, 1]))
    assert arrays.x[:, 0].astype(int).tolist() == [0, 1, 3, 4]
    assert arrays.is_test.tolist() == [False, False, True, True]


def test_classes_come_before_max_per_class(tmp_path):
    path = write_npz(tmp_path, [0] * 5 + [1] * 2 + [2] * 6)
    arrays = read_source(spec(path, classes=[0, 2], max_per_class=3), seed=0)
    assert np.bincount(arrays.y).tolist() == [3, 3]
    assert set(arrays.x[:, 1].astype(int)) == {0, 2}


def test_classes_keep_the_names_the_source_gives(tmp_path):
    for name in ("cat", "dog", "emu"):  # an image folder names its classes after its subfolders
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((2, 2), 40 * i, dtype=np.uint8)).save(tmp_path / "pics" / name / f"{i}.png")
    arrays = read_source(DataSourceParams(format="image_folder", path=str(tmp_path / "pics"), classes=[2, 0]))
    assert arrays.class_names == ("emu", "cat") and arrays.y.tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize(
    "classes, message",
    [
        ([0, 7], r"toy\.npz: data\.classes lists label 7, which the data do not hold \(labels present: 0, 1, 2\)"),
        ([-1, 0], r"data\.classes lists label -1, which the data do not hold"),
        ([1, 0, 1], r"data\.classes \[1, 0, 1\] lists label 1 more than once; list each once"),
        ([1], r"data\.classes \[1\] lists 1 label\(s\), but a classifier needs at least 2; list two or more"),
        ([], r"data\.classes \[\] lists 0 label\(s\)"),
    ],
)
def test_bad_classes_are_refused_in_one_sentence(tmp_path, classes, message):
    path = write_npz(tmp_path, [0, 1, 2, 0, 1, 2])
    with pytest.raises(ArtifactError, match=message) as error:
        read_source(spec(path, classes=classes))
    text = str(error.value)
    assert text.count(". ") == 0 and text.endswith(".") and "\n" not in text


def test_classes_reach_provenance_content_hash_and_cache_key(tmp_path):
    path = write_npz(tmp_path, [0, 1, 2, 3] * 4)

    def params(classes):
        data = {"format": "npz", "path": str(path)} | ({} if classes is None else {"classes": classes})
        return params_from_dict({"datasets": ["toy"], "sources": {"toy": {"data": data}}})

    runs = {}
    for classes in (None, [0, 1], [1, 0], [0, 2]):
        p = params(classes)
        ds = dataset_from_arrays("toy", read_source(p.sources["toy"].data), 0.25, 0)
        runs[str(classes)] = (
            str(data_provenance(p, "toy")),
            ds.dataset_hash,
            str(stage_sections(p, "data", "toy")),
        )
    for i in range(3):  # provenance, the dataset's hash, the data task's sections: four values each
        assert len({run[i] for run in runs.values()}) == 4, i
    assert data_provenance(params([1, 0]), "toy")["source"]["classes"] == [1, 0]
