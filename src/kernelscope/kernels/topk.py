"""Top-k sparse kernels on disk: each query row's k largest entries and the row's norm, for kernels too large
to keep dense (N = 50,000 training points: 10 GB per split as dense float32).

Schema: ``query_id`` int64, ``index`` fixed_size_list<int32, k> (columns into the training ids, by decreasing
value, ties by lower index), ``value`` fixed_size_list<float32, k> and ``row_norm`` float64 (the L2 norm of the
whole dense row, so a reader can tell how much of each row the k entries hold). Provenance and content hash as
for the dense kernel (kernelscope.kernels.store), with ``topk`` recorded; every read verifies both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from kernelscope.core.artifacts import read_parquet, verified_row_groups
from kernelscope.core.errors import ArtifactError
from kernelscope.kernels.store import ARTIFACT as DENSE_ARTIFACT
from kernelscope.kernels.store import check_rows, read_kernel, write_row_blocks

ARTIFACT = "kernel-topk"


def _schema(k: int) -> pa.Schema:
    return pa.schema(
        [
            ("query_id", pa.int64()),
            ("index", pa.list_(pa.int32(), k)),
            ("value", pa.list_(pa.float32(), k)),
            ("row_norm", pa.float64()),
        ]
    )


def top_k_rows(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b, n) dense rows -> (indices (b, k) int32 by decreasing value, ties by lower index; their values (b, k)
    float32; each row's L2 norm (b,) float64). The values are first rounded to the stored float32, so the choice
    is the one a reader of the dense file would make.

    Linear in n per row (a partition, then a sort of the entries at or above each row's k-th largest value),
    not n log n: a 50,000-column row block is selected in the time it takes to compute it."""
    rows32 = np.asarray(rows, dtype=np.float32)
    b = len(rows32)
    kth = -np.partition(-rows32, k - 1, axis=1)[:, k - 1]  # (b,) each row's k-th largest value
    r, c = np.nonzero(rows32 >= kth[:, None])  # every candidate, ties at the k-th value included; c ascending per row
    v = rows32[r, c]
    order = np.lexsort((c, -v, r))  # by row, then decreasing value, then lower column
    c, v = c[order], v[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=b))[:-1]])  # (b,) first candidate of each row
    take = starts[:, None] + np.arange(k)  # (b, k): each row has at least k candidates
    norms = np.sqrt((rows32.astype(np.float64) ** 2).sum(axis=1))
    return c[take].astype(np.int32), v[take], norms


@dataclass(frozen=True)
class TopkRows:
    """A block of kernel rows reduced to what a top-k file stores, where it was computed (a row-block task hands
    over ~2 KB a row at k = 256 instead of 4 bytes per training point): index (b, k) int32, value (b, k) float32,
    norm (b,) float64, of rows ``n_train`` wide; ``finite`` (b,): whether each whole row was finite."""

    index: np.ndarray
    value: np.ndarray
    norm: np.ndarray
    finite: np.ndarray
    n_train: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), self.n_train

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def of(cls, rows: np.ndarray, k: int) -> TopkRows:
        """(b, n_train) dense rows -> their top-k entries (``top_k_rows``): the same bytes once written."""
        with np.errstate(over="ignore", invalid="ignore"):
            rows32 = np.asarray(rows, dtype=np.float32)  # (b, n_train) as the file would hold them
        return cls(*top_k_rows(rows32, k), np.isfinite(rows32).all(axis=1), rows32.shape[1])


def write_topk_kernel_blocks(
    path: str | Path,
    blocks: Iterable[tuple[np.ndarray, np.ndarray | TopkRows]],
    n_query: int,
    train_ids: np.ndarray,
    provenance: dict[str, Any],
    *,
    k: int,
) -> dict[str, Any]:
    """Stream (query_ids (b,), rows (b, n_train)) blocks, dense or already reduced (TopkRows of this k), into a top-k
    artifact, atomically: one block in memory at a time; a non-finite value or a wrong shape stops the write and
    leaves any previous file."""
    n_t = len(train_ids)
    if not 1 <= k <= n_t:
        raise ValueError(f"kernel.topk {k} must lie in [1, {n_t}] (the number of training points)")
    schema = _schema(k)
    return write_row_blocks(
        path,
        blocks,
        n_query,
        train_ids,
        {"topk": int(k), **provenance},
        artifact=ARTIFACT,
        schema=schema,
        value_column="value",
        table_of_block=lambda rows, query_ids: _topk_table(rows, query_ids, k, schema),
    )


def _topk_table(rows: np.ndarray | TopkRows, query_ids: np.ndarray, k: int, schema: pa.Schema) -> pa.Table:
    """(b, n_train) rows, dense or reduced -> one row group of their top-k entries and norms."""
    reduced = rows if isinstance(rows, TopkRows) else TopkRows.of(rows, k)
    if reduced.index.shape[1] != k:
        raise ValueError(f"a block holds the top {reduced.index.shape[1]} entries of its rows, not the top {k}")
    index, values, norms = reduced.index, reduced.value, reduced.norm
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(query_ids, dtype=np.int64)),
            pa.FixedSizeListArray.from_arrays(pa.array(index.reshape(-1), pa.int32()), k),
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), k),
            pa.array(norms, pa.float64()),
        ],
        schema=schema,
    )


def _block_arrays(path: Path, meta: dict[str, Any], table: pa.Table) -> tuple[np.ndarray, ...]:
    k, n_t = meta.get("topk"), meta.get("n_train")
    if not isinstance(k, int) or table.schema.field("index").type.list_size != k or not isinstance(n_t, int):
        raise ArtifactError(f"{path}: metadata 'topk' ({k}) does not match the file's columns; rerun the kernel stage.")
    index = table.column("index").combine_chunks().flatten().to_numpy().reshape(-1, k)
    values = table.column("value").combine_chunks().flatten().to_numpy().reshape(-1, k)
    return table.column("query_id").to_numpy(), index, values, table.column("row_norm").to_numpy()


def _csr(index: np.ndarray, values: np.ndarray, n_train: int) -> sp.csr_matrix:
    """(b, k) indices and values -> a (b, n_train) CSR matrix, columns sorted within each row."""
    b, k = index.shape
    data, columns = values.reshape(-1).copy(), index.reshape(-1).copy()  # Arrow's buffers are read-only
    matrix = sp.csr_matrix((data, columns, np.arange(0, b * k + 1, k)), shape=(b, n_train), dtype=np.float32)
    matrix.sort_indices()
    return matrix


def iter_topk_blocks(
    path: str | Path, expect: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, sp.csr_matrix, np.ndarray]]:
    """Yield (query_ids (b,), rows as CSR (b, n_train), row norms (b,)) one row group at a time, after the whole
    file is verified."""
    meta, groups = verified_row_groups(path, ARTIFACT, expect)
    for table in groups:
        ids, index, values, norms = _block_arrays(Path(path), meta, table)
        yield ids, _csr(index, values, meta["n_train"]), norms


def read_topk_kernel(
    path: str | Path, expect: dict[str, Any] | None = None, query_ids: np.ndarray | None = None
) -> tuple[sp.csr_matrix, np.ndarray, dict[str, Any]]:
    """The whole top-k kernel as CSR (n_query, n_train) float32, each row's norm, and the verified metadata;
    when given, the rows' ids must be ``query_ids`` in order."""
    path = Path(path)
    table, meta = read_parquet(path, ARTIFACT, expect)
    ids, index, values, norms = _block_arrays(path, meta, table)
    check_rows(path, meta, ids, query_ids)
    return _csr(index, values, meta["n_train"]), norms, meta


KernelMatrix = np.ndarray | sp.csr_matrix  # (n_query, n_train): dense, or the top-k entries of each row


def kernel_artifact(storage: str) -> str:
    """The artifact type of a kernel file for params.kernel.storage."""
    return ARTIFACT if storage == "topk" else DENSE_ARTIFACT


def read_kernel_matrix(
    path: str | Path, storage: str, expect: dict[str, Any] | None = None, query_ids: np.ndarray | None = None
) -> tuple[KernelMatrix, dict[str, Any]]:
    """A verified kernel in the storage params.kernel.storage names: dense float32, or CSR of its top-k entries."""
    if storage == "topk":
        matrix, _, meta = read_topk_kernel(path, expect, query_ids)
        return matrix, meta
    return read_kernel(path, expect, query_ids)


def dense_rows(k: KernelMatrix) -> np.ndarray:
    """Rows as a dense float64 array (a top-k row's missing entries are 0)."""
    return k.toarray().astype(np.float64) if sp.issparse(k) else np.asarray(k, dtype=np.float64)


def row_slices(n: int, rows: int = 512) -> Iterator[slice]:
    """Slices of ``rows`` rows (the last shorter) covering 0..n."""
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def row_blocks(k: KernelMatrix, rows: int = 512) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, dense rows) in blocks, so a sparse kernel is never densified whole."""
    for block in row_slices(k.shape[0], rows):
        yield block, dense_rows(k[block])
