"""Top-k sparse kernel artifacts: the k largest entries of each row, against a row-by-row reference; verified reads."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kernelscope.core.errors import ArtifactError, KernelscopeError
from kernelscope.kernels.topk import (
    TopkRows,
    iter_topk_blocks,
    read_topk_kernel,
    top_k_rows,
    write_topk_kernel_blocks,
)


def _blocks(kernel: np.ndarray, ids: np.ndarray, rows: int):
    return ((ids[s : s + rows], kernel[s : s + rows]) for s in range(0, len(kernel), rows))


def _reference_top_k(row: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The slow, obvious way: sort (−value, column) pairs of the float32 row."""
    row = row.astype(np.float32)
    return sorted(((int(j), float(v)) for j, v in enumerate(row)), key=lambda p: (-p[1], p[0]))[:k]


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_top_k_rows_matches_the_sorted_reference_through_ties_at_the_cut(k):
    rng = np.random.default_rng(k)
    rows = rng.integers(-2, 3, size=(30, 12)).astype(np.float64) / 2  # many ties, many of them at the k-th value
    rows[::4, ::3] = -0.0  # -0 and +0 are the same value: ties, kept in column order
    index, values, _ = top_k_rows(rows, k)
    assert index.dtype == np.int32 and values.dtype == np.float32 and index.shape == values.shape == (30, k)
    for i, row in enumerate(rows):
        assert list(zip(index[i].tolist(), values[i].tolist())) == _reference_top_k(row, k)


def test_round_trip_keeps_each_rows_k_largest_and_its_norm(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((23, 40))
    kernel[3, [5, 9, 30]] = 7.0  # a three-way tie: kept in column order
    ids, train_ids = np.arange(100, 123), np.arange(40) * 2
    write_topk_kernel_blocks(tmp_path / "k.parquet", _blocks(kernel, ids, 8), 23, train_ids, {"kind": "t"}, k=4)
    matrix, norms, meta = read_topk_kernel(tmp_path / "k.parquet", expect={"kind": "t", "topk": 4})
    assert matrix.shape == (23, 40) and meta["train_ids"] == train_ids.tolist()
    for i, row in enumerate(kernel):
        got = matrix.getrow(i)
        kept = sorted(zip(got.indices.tolist(), got.data.tolist()), key=lambda p: (-p[1], p[0]))
        assert kept == _reference_top_k(row, 4)
    np.testing.assert_allclose(norms, np.linalg.norm(kernel.astype(np.float32), axis=1), rtol=1e-6)
    index, _, _ = top_k_rows(kernel[3:4], 3)
    assert index.tolist() == [[5, 9, 30]]
    streamed = list(iter_topk_blocks(tmp_path / "k.parquet"))
    assert [len(b[0]) for b in streamed] == [8, 8, 7] and np.concatenate([b[0] for b in streamed]).tolist() == list(ids)
    assert (streamed[0][1] != matrix[:8]).nnz == 0  # the same rows, streamed or read whole


def test_tampered_or_mismatched_file_is_refused_and_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "k.parquet"
    kernel = np.arange(12.0).reshape(3, 4)
    write_topk_kernel_blocks(path, _blocks(kernel, np.arange(3), 2), 3, np.arange(4), {"kind": "t"}, k=2)
    before = path.read_bytes()
    with pytest.raises(ArtifactError, match="topk"):
        read_topk_kernel(path, expect={"topk": 3})
    bad = kernel.copy()
    bad[1, 2] = np.nan
    with pytest.raises(KernelscopeError, match="NaN or inf"):
        write_topk_kernel_blocks(path, _blocks(bad, np.arange(3), 2), 3, np.arange(4), {"kind": "t"}, k=2)
    with pytest.raises(ValueError, match="topk 5"):
        write_topk_kernel_blocks(path, _blocks(kernel, np.arange(3), 2), 3, np.arange(4), {"kind": "t"}, k=5)
    assert path.read_bytes() == before
    table = pq.read_table(path)  # one kept value changed, the footer (and its hash) written back as it was
    values = table.column("value").combine_chunks().flatten().to_numpy().copy()
    values[0] += 1.0
    edited = table.set_column(2, "value", pa.FixedSizeListArray.from_arrays(pa.array(values), 2))
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(ArtifactError, match="content hash|does not match|tampered|changed"):
        read_topk_kernel(path)


def test_blocks_reduced_where_they_were_computed_write_the_same_bytes(tmp_path):
    rng = np.random.default_rng(3)
    kernel, ids, train_ids = rng.standard_normal((23, 40)), np.arange(23), np.arange(40)
    write_topk_kernel_blocks(tmp_path / "dense-in.parquet", _blocks(kernel, ids, 8), 23, train_ids, {"kind": "t"}, k=4)
    reduced = ((i, TopkRows.of(rows, 4)) for i, rows in _blocks(kernel, ids, 8))  # as a row-block task hands them over
    write_topk_kernel_blocks(tmp_path / "reduced-in.parquet", reduced, 23, train_ids, {"kind": "t"}, k=4)
    assert (tmp_path / "dense-in.parquet").read_bytes() == (tmp_path / "reduced-in.parquet").read_bytes()
    bad = kernel.copy()
    bad[9, 30] = np.inf  # the whole row's finiteness travels with its top-k entries

    def reduced_blocks(rows: np.ndarray):
        return ((i, TopkRows.of(r, 4)) for i, r in _blocks(rows, ids, 8))

    with pytest.raises(KernelscopeError, match=r"kernel values of 1 rows are NaN or inf \(first at query id 9\)"):
        write_topk_kernel_blocks(tmp_path / "bad.parquet", reduced_blocks(bad), 23, train_ids, {}, k=4)
    with pytest.raises(ValueError, match="top 4 entries of its rows, not the top 5"):
        write_topk_kernel_blocks(tmp_path / "k5.parquet", reduced_blocks(kernel), 23, train_ids, {}, k=5)
    assert not (tmp_path / "bad.parquet").exists() and not (tmp_path / "k5.parquet").exists()
