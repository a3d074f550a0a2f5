"""Kernel matrices on disk: Parquet, one row per query point, (query, train) orientation.

Schema: ``query_id`` int64 and ``values`` fixed_size_list<float32, n_train>, zstd with
byte-stream-split. Provenance (kind, normalization, checkpoint and dataset hashes, package
version, the training ids) lives in the schema metadata under the key ``kernelscope``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kernelscope import __version__
from kernelscope.errors import ArtifactError, KernelscopeError
from kernelscope.fileio import atomic_path

METADATA_KEY = b"kernelscope"
ORIENTATION = "(query, train)"
TEST_BLOCK_DELAY_ENV = "KERNELSCOPE_TEST_BLOCK_DELAY"  # tests only: seconds to sleep after each written block


def _test_block_delay() -> None:
    """Sleep after each row group when KERNELSCOPE_TEST_BLOCK_DELAY is set, so a test can kill a writer mid-file."""
    delay = os.environ.get(TEST_BLOCK_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _schema(n_train: int, meta: dict[str, Any]) -> pa.Schema:
    schema = pa.schema([("query_id", pa.int64()), ("values", pa.list_(pa.float32(), n_train))])
    return schema.with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def _row_group(block: np.ndarray, query_ids: np.ndarray, schema: pa.Schema) -> pa.Table:
    """(b, n_train) rows -> one Parquet row group (values cast to float32)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), block.shape[1])
    ids = pa.array(np.asarray(query_ids, dtype=np.int64))
    return pa.Table.from_arrays([ids, values], schema=schema)


def write_kernel_blocks(path: str | Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], n_query: int,
                        train_ids: np.ndarray, provenance: dict[str, Any]) -> dict[str, Any]:
    """Stream (query_ids (b,), rows (b, n_train)) blocks into row groups of one Parquet file, atomically.

    Only one block is in memory at a time, so a kernel larger than memory can be written.
    A failure anywhere leaves any previous file at ``path`` untouched. A block holding NaN or inf
    (after the cast to float32) stops the write with a KernelscopeError: no kernel file ever
    holds a non-finite value. A killed writer leaves only a temporary file (see ``atomic_path``);
    the next run starts the file afresh and writes the same bytes.
    """
    n_t = len(train_ids)
    meta = {
        "orientation": ORIENTATION,
        "n_query": int(n_query),
        "n_train": int(n_t),
        "train_ids": [int(i) for i in train_ids],
        "value_dtype": "float32",
        "kernelscope_version": __version__,
        **provenance,
    }
    schema = _schema(n_t, meta)
    written = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=False,
                              column_encoding={"query_id": "PLAIN", "values.list.element": "BYTE_STREAM_SPLIT"}) as writer:
            for query_ids, rows in blocks:
                if rows.shape[1] != n_t or len(query_ids) != len(rows):
                    raise ValueError(f"block of shape {rows.shape} with {len(query_ids)} ids does not fit a kernel with {n_t} training columns")
                _require_finite(path, rows, query_ids)
                writer.write_table(_row_group(rows, query_ids, schema))
                written += len(rows)
                _test_block_delay()
        if written != n_query:
            raise ValueError(f"{written} rows were written but the kernel has {n_query} query points")
    return meta


def _require_finite(path: str | Path, rows: np.ndarray, query_ids: np.ndarray) -> None:
    """Refuse a block with NaN or inf, or with values that overflow the stored float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(np.asarray(rows, dtype=np.float32))
    if bad.any():
        first = int(np.asarray(query_ids)[np.argmax(bad.any(axis=1))])
        raise KernelscopeError(
            f"{path}: {int(bad.sum())} kernel values are NaN or inf (first at query id {first}), so nothing was written; "
            "the model's weights or gradients are non-finite or overflow float32, check or retrain the checkpoint.")


def write_kernel(path: str | Path, kernel: np.ndarray, query_ids: np.ndarray, train_ids: np.ndarray,
                 provenance: dict[str, Any], rows_per_group: int = 1024) -> dict[str, Any]:
    """Write a whole (n_query, n_train) kernel atomically in row groups; return the metadata written."""
    n_q, n_t = kernel.shape
    if len(query_ids) != n_q or len(train_ids) != n_t:
        raise ValueError(f"ids do not match kernel shape {kernel.shape}: {len(query_ids)} query ids, {len(train_ids)} train ids")
    blocks = ((query_ids[s : s + rows_per_group], kernel[s : s + rows_per_group]) for s in range(0, n_q, rows_per_group))
    return write_kernel_blocks(path, blocks, n_q, train_ids, provenance)


def read_kernel_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: kernel file not found; run the kernel stage first (kernelscope kernel).")
    try:
        raw = pq.read_schema(path).metadata[METADATA_KEY]
        return json.loads(raw)
    except (pa.ArrowInvalid, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not a kernelscope kernel file ({error.__class__.__name__}); rerun the kernel stage.") from None


def check_provenance(path: str | Path, meta: dict[str, Any], expect: dict[str, Any] | None) -> None:
    for key, wanted in (expect or {}).items():
        if meta.get(key) != wanted:
            raise ArtifactError(
                f"{path}: provenance field '{key}' is {meta.get(key)!r} but {wanted!r} was requested; rerun the kernel stage for this input."
            )


def iter_kernel_blocks(path: str | Path, expect: dict[str, Any] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (query_ids (b,), values (b, n_train) float32) one row group at a time."""
    meta = read_kernel_meta(path)
    check_provenance(path, meta, expect)
    parquet = pq.ParquetFile(path)
    n_t = meta["n_train"]
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        values = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, n_t)
        yield table.column("query_id").to_numpy(), values


def read_kernel(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Whole kernel as float32 (n_query, n_train) plus its metadata; provenance checked against ``expect``."""
    meta = read_kernel_meta(path)
    check_provenance(path, meta, expect)
    out = np.empty((meta["n_query"], meta["n_train"]), dtype=np.float32)
    row = 0
    for _, values in iter_kernel_blocks(path):
        out[row : row + len(values)] = values
        row += len(values)
    if row != meta["n_query"]:
        raise ArtifactError(f"{path}: holds {row} rows but its metadata says {meta['n_query']}; the file is torn, rerun the kernel stage.")
    return out, meta
