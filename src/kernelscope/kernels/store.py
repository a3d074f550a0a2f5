"""Kernel matrices on disk: Parquet, one row per query point, (query, train) orientation.

Schema: ``query_id`` int64 and ``values`` fixed_size_list<float32, n_train>, zstd with
byte-stream-split. Provenance (kind, normalization, every option that shaped it, checkpoint and
dataset hashes, package version, the training ids) and the content hash live in the footer
(kernelscope.core.artifacts), and every read verifies both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kernelscope.core.artifacts import ParquetArtifactWriter, read_parquet, verified_row_groups, verify_parquet
from kernelscope.core.errors import ArtifactError, KernelscopeError

ARTIFACT = "kernel"
ORIENTATION = "(query, train)"
TEST_BLOCK_DELAY_ENV = "KERNELSCOPE_TEST_BLOCK_DELAY"  # tests only: seconds to sleep after each written block


def pause_after_block() -> None:
    """Sleep after each row group when KERNELSCOPE_TEST_BLOCK_DELAY is set, so a test can kill a writer mid-file."""
    delay = os.environ.get(TEST_BLOCK_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _schema(n_train: int) -> pa.Schema:
    return pa.schema([("query_id", pa.int64()), ("values", pa.list_(pa.float32(), n_train))])


def _row_group(block: np.ndarray, query_ids: np.ndarray, schema: pa.Schema) -> pa.Table:
    """(b, n_train) rows -> one Parquet row group (values cast to float32)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), block.shape[1])
    ids = pa.array(np.asarray(query_ids, dtype=np.int64))
    return pa.Table.from_arrays([ids, values], schema=schema)


def write_kernel_blocks(
    path: str | Path,
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    n_query: int,
    train_ids: np.ndarray,
    provenance: dict[str, Any],
    artifact: str = ARTIFACT,
) -> dict[str, Any]:
    """Stream (query_ids (b,), rows (b, n_train)) blocks into row groups of one dense Parquet kernel, atomically
    (see ``write_row_blocks``)."""
    schema = _schema(len(train_ids))
    return write_row_blocks(
        path,
        blocks,
        n_query,
        train_ids,
        {"value_dtype": "float32", **provenance},
        artifact=artifact,
        schema=schema,
        value_column="values",
        table_of_block=lambda rows, query_ids: _row_group(rows, query_ids, schema),
    )


def write_row_blocks(
    path: str | Path,
    blocks: Iterable[tuple[np.ndarray, Any]],
    n_query: int,
    train_ids: np.ndarray,
    provenance: dict[str, Any],
    *,
    artifact: str,
    schema: pa.Schema,
    value_column: str,
    table_of_block: Callable[[np.ndarray, np.ndarray], pa.Table],
) -> dict[str, Any]:
    """Stream (query_ids (b,), rows (b, n_train)) blocks into one Parquet artifact, a row group per block, each made
    by ``table_of_block(rows, query_ids)`` (the dense rows or their top-k entries). ``rows`` is an array, or any
    block with a ``shape`` and a ``finite`` mask (kernelscope.kernels.topk.TopkRows: reduced where it was computed).

    Only one block is in memory at a time, so a kernel larger than memory can be written.
    A failure anywhere leaves any previous file at ``path`` untouched. A block holding NaN or inf
    (after the cast to float32) stops the write with a KernelscopeError: no kernel file ever
    holds a non-finite value. A killed writer leaves only a temporary file (see ``atomic_path``);
    the next run starts the file afresh and writes the same bytes. The content hash (values and
    provenance) is recorded in the footer; every read checks it.
    """
    n_t = len(train_ids)
    provenance = {
        "orientation": ORIENTATION,
        "n_query": int(n_query),
        "n_train": int(n_t),
        "train_ids": [int(i) for i in train_ids],
        **provenance,
    }
    with ParquetArtifactWriter(
        path,
        schema,
        artifact,
        provenance,
        use_dictionary=False,
        column_encoding={"query_id": "PLAIN", f"{value_column}.list.element": "BYTE_STREAM_SPLIT"},
    ) as writer:
        for query_ids, rows in blocks:
            if rows.shape[1] != n_t or len(query_ids) != len(rows):
                raise ValueError(
                    f"block of shape {rows.shape} with {len(query_ids)} ids "
                    f"does not fit a kernel with {n_t} training columns"
                )
            require_finite(path, rows, query_ids)
            writer.write(table_of_block(rows, query_ids))
            pause_after_block()
        if writer.rows != n_query:
            raise ValueError(f"{writer.rows} rows were written but the kernel has {n_query} query points")
    return {**writer.meta, "content_sha256": writer.meta_hash}


def require_finite(path: str | Path, rows: Any, query_ids: np.ndarray) -> None:
    """Refuse a block with NaN or inf, or with values that overflow the stored float32: dense rows (b, n_train), or
    rows already reduced to their top-k entries (``rows.finite``: (b,) whether each whole row was finite)."""
    if isinstance(rows, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(np.asarray(rows, dtype=np.float32))
        bad_rows, count = bad.any(axis=1), f"{int(bad.sum())} kernel values are"
    else:
        bad_rows = ~np.asarray(rows.finite)
        count = f"kernel values of {int(bad_rows.sum())} rows are"
    if bad_rows.any():
        first = int(np.asarray(query_ids)[np.argmax(bad_rows)])
        raise KernelscopeError(
            f"{path}: {count} NaN or inf (first at query id {first}), so nothing was written; "
            "the model's weights or gradients are non-finite or overflow float32, check or retrain the checkpoint."
        )


def write_kernel(
    path: str | Path,
    kernel: np.ndarray,
    query_ids: np.ndarray,
    train_ids: np.ndarray,
    provenance: dict[str, Any],
    rows_per_group: int = 1024,
    artifact: str = ARTIFACT,
) -> dict[str, Any]:
    """Write a whole (n_query, n_train) kernel atomically in row groups; return the metadata written."""
    n_q, n_t = kernel.shape
    if len(query_ids) != n_q or len(train_ids) != n_t:
        raise ValueError(
            f"ids do not match kernel shape {kernel.shape}: {len(query_ids)} query ids, {len(train_ids)} train ids"
        )
    blocks = (
        (query_ids[s : s + rows_per_group], kernel[s : s + rows_per_group]) for s in range(0, n_q, rows_per_group)
    )
    return write_kernel_blocks(path, blocks, n_q, train_ids, provenance, artifact)


def _check_shape(path: Path, meta: dict[str, Any], table: pa.Table) -> int:
    """The verified file's own metadata must describe its columns (a writer bug, never a user's edit, would break
    this)."""
    n_t = meta.get("n_train")
    width = table.schema.field("values").type.list_size if "values" in table.column_names else None
    if not isinstance(n_t, int) or n_t != width or len(meta.get("train_ids", [])) != n_t:
        raise ArtifactError(
            f"{path}: metadata 'n_train' ({n_t}) does not match the file's {width} training columns; "
            "rerun the kernel stage."
        )
    return n_t


def read_kernel_meta(
    path: str | Path, expect: dict[str, Any] | None = None, artifact: str = ARTIFACT
) -> dict[str, Any]:
    """Provenance of a verified kernel file (``artifact``: 'kernel-topk' for a top-k one)."""
    return verify_parquet(path, artifact, expect)


def iter_kernel_blocks(
    path: str | Path, expect: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (query_ids (b,), values (b, n_train) float32) one row group at a time, after the whole file is verified."""
    meta, groups = verified_row_groups(path, ARTIFACT, expect)
    n_t = None
    for table in groups:
        n_t = n_t or _check_shape(Path(path), meta, table)
        values = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, n_t)
        yield table.column("query_id").to_numpy(), values


def read_kernel(
    path: str | Path,
    expect: dict[str, Any] | None = None,
    query_ids: np.ndarray | None = None,
    artifact: str = ARTIFACT,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Whole kernel as float32 (n_query, n_train) plus its metadata, verified; provenance checked against ``expect``
    and, when given, the rows' ids against ``query_ids`` (in order)."""
    path = Path(path)
    table, meta = read_parquet(path, artifact, expect)
    n_t = _check_shape(path, meta, table)
    values = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, n_t)
    check_rows(path, meta, table.column("query_id").to_numpy(), query_ids)
    return np.ascontiguousarray(values, dtype=np.float32), meta


def check_rows(path: Path, meta: dict[str, Any], ids: np.ndarray, query_ids: np.ndarray | None) -> None:
    """A kernel file's rows (ids (n,)) are as many as its metadata says and, when given, ``query_ids`` in order."""
    if len(ids) != meta.get("n_query"):
        raise ArtifactError(
            f"{path}: holds {len(ids)} rows but its metadata says {meta.get('n_query')}; rerun the kernel stage."
        )
    if query_ids is not None and not np.array_equal(ids, np.asarray(query_ids, dtype=np.int64)):
        raise ArtifactError(
            f"{path}: its query rows are not this run's points in order; "
            "the kernel comes from other data, rerun the kernel stage."
        )
