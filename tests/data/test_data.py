import numpy as np
import pyarrow.parquet as pq
import pytest

from kernelscope.core.errors import ArtifactError
from kernelscope.data.datasets import make_digits, read_dataset, write_dataset


def test_split_is_seeded_and_stratified():
    a, b = make_digits("digits10", 0.3, seed=0), make_digits("digits10", 0.3, seed=0)
    assert a.dataset_hash == b.dataset_hash
    assert make_digits("digits10", 0.3, seed=1).dataset_hash != a.dataset_hash
    train_share = np.bincount(a.train.y) / len(a.train.y)
    test_share = np.bincount(a.test.y) / len(a.test.y)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    assert len(set(a.train.ids) & set(a.test.ids)) == 0
    assert len(a.train.ids) + len(a.test.ids) == 1797


def test_digits2_has_classes_zero_and_one():
    ds = make_digits("digits2", 0.3, seed=0)
    assert ds.n_classes == 2 and set(ds.train.y) == {0, 1}
    assert len(ds.train.y) + len(ds.test.y) == 360
    # sklearn's 17 intensities 0..16 scaled by 1/16: exactly 0, 1/16, ..., 1, every one of them present
    assert np.array_equal(np.unique(ds.train.x * 16), np.arange(17)) and ds.train.x.dtype == np.float32


def test_parquet_round_trip_with_hash(tmp_path):
    ds = make_digits("digits2", 0.3, seed=0)
    written = write_dataset(ds, tmp_path)
    meta = pq.ParquetFile(written["train"]).metadata.metadata
    assert ds.train.content_hash.encode() in meta[b"kernelscope"]
    back = read_dataset(tmp_path)
    assert back.dataset_hash == ds.dataset_hash
    np.testing.assert_array_equal(back.train.x, ds.train.x)
    first = (tmp_path / "train.parquet").read_bytes()
    write_dataset(ds, tmp_path)
    assert (tmp_path / "train.parquet").read_bytes() == first  # same params, same bytes


def test_tampered_split_is_refused(tmp_path):
    ds = make_digits("digits2", 0.3, seed=0)
    write_dataset(ds, tmp_path)
    from tests.support.faults import rewrite_parquet

    rewrite_parquet(
        tmp_path / "train.parquet", lambda table: table.slice(1)
    )  # keeps the old metadata and hash, drops a row
    with pytest.raises(ArtifactError, match="content does not match its recorded content hash"):
        read_dataset(tmp_path)
    pq.write_table(pq.read_table(tmp_path / "train.parquet"), tmp_path / "train.parquet")  # footer hash lost
    with pytest.raises(ArtifactError, match="no kernelscope provenance or content hash"):
        read_dataset(tmp_path)
