"""Per-training-point attribution of the kGLM (the NTK-surrogate paper's Eq. 3).

A_c(x, x_j) = W_{c,j} κ(x, x_j) + b_c / N, so Σ_j A_c(x, x_j) = kGLM_c(x) exactly: each logit is
split over the training points. Sign: positive attribution pushes logit c up.
Stored as Parquet with one row per (query, logit): ``query_id``, ``logit`` and a
``fixed_size_list<float32, N>`` of attributions in training-id order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kernelscope import __version__
from kernelscope.errors import ArtifactError
from kernelscope.fileio import atomic_path
from kernelscope.kglm import KGLM

METADATA_KEY = b"kernelscope"


def attributions(model: KGLM, k_query: np.ndarray) -> np.ndarray:
    """(b, N) kernel rows -> (b, C_out, N) float64 attributions; summing over N gives the logits."""
    k = np.asarray(k_query, dtype=np.float64)
    n_train = k.shape[1]
    return model.weight[None, :, :] * k[:, None, :] + (model.bias / n_train)[None, :, None]


def write_attributions(path: str | Path, model: KGLM, kernel_blocks: Iterable[tuple[np.ndarray, np.ndarray]], train_ids: np.ndarray,
                       provenance: dict[str, Any]) -> dict[str, Any]:
    """Stream attributions of every (query, logit) into Parquet, one row group per kernel block."""
    n_t = len(train_ids)
    meta = {"orientation": "(query, logit, train)", "n_train": n_t, "n_logits": int(model.weight.shape[0]),
            "train_ids": [int(i) for i in train_ids], "definition": "A_c(x, x_j) = W_cj k(x, x_j) + b_c / N",
            "kernelscope_version": __version__, **provenance}
    schema = pa.schema([("query_id", pa.int64()), ("logit", pa.int16()), ("values", pa.list_(pa.float32(), n_t))])
    schema = schema.with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    n_rows = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=False) as writer:
            for query_ids, k_rows in kernel_blocks:
                a = attributions(model, k_rows).astype(np.float32)  # (b, C_out, N)
                b, c, _ = a.shape
                values = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), n_t)
                qid = pa.array(np.repeat(np.asarray(query_ids, dtype=np.int64), c))
                logit = pa.array(np.tile(np.arange(c, dtype=np.int16), b))
                writer.write_table(pa.Table.from_arrays([qid, logit, values], schema=schema))
                n_rows += b
    return {**meta, "n_query": n_rows}


def read_attributions(path: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (query_ids (b,), attributions (b, C_out, N)) per row group."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: attribution file not found; run the attribution step first.")
    parquet = pq.ParquetFile(path)
    meta = json.loads(parquet.schema_arrow.metadata[METADATA_KEY])
    c, n = meta["n_logits"], meta["n_train"]
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        values = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, c, n)
        yield table.column("query_id").to_numpy()[::c], values


def class_summary(model: KGLM, kernel_blocks: Iterable[np.ndarray], train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean attribution from each training class t to each logit c: (n_classes, C_out) (the paper's Fig. 2B).

    Needs only the column sums of the kernel: Σ_x Σ_{j∈t} A_c(x, x_j) = Σ_{j∈t} W_cj Σ_x κ(x, x_j) + n_q |t| b_c / N,
    so attributions are never materialized.
    """
    col_sum, n_q = None, 0
    for k_rows in kernel_blocks:
        s = np.asarray(k_rows, dtype=np.float64).sum(0)
        col_sum = s if col_sum is None else col_sum + s
        n_q += len(k_rows)
    n_train = len(train_labels)
    out = np.zeros((n_classes, model.weight.shape[0]))
    for t in range(n_classes):
        members = train_labels == t
        size = int(members.sum())
        if size == 0:
            continue
        total = (model.weight[:, members] * col_sum[members]).sum(1) + n_q * size * model.bias / n_train
        out[t] = total / (n_q * size)
    return out
