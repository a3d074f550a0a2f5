"""Per-training-point attribution of the kGLM (the NTK-surrogate paper's Eq. 3).

A_c(x, x_j) = W_{c,j} κ(x, x_j) + b_c / N, so Σ_j A_c(x, x_j) = kGLM_c(x) exactly: each logit is
split over the training points. Sign: positive attribution pushes logit c up.
Stored as Parquet with one row per (query, logit): ``query_id``, ``logit`` and a
``fixed_size_list<float32, N>`` of attributions in training-id order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from kernelscope.core.artifacts import ParquetArtifactWriter, verified_row_groups
from kernelscope.surrogate.kglm import KGLM

ARTIFACT = "attributions"
TOPK_ARTIFACT = "attributions-topk"


def attributions(model: KGLM, k_query: np.ndarray) -> np.ndarray:
    """(b, N) kernel rows -> (b, C_out, N) float64 attributions; summing over N gives the logits."""
    k = np.asarray(k_query, dtype=np.float64)
    n_train = k.shape[1]
    return model.weight[None, :, :] * k[:, None, :] + (model.bias / n_train)[None, :, None]


def write_attributions(
    path: str | Path,
    model: KGLM,
    kernel_blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    train_ids: np.ndarray,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Stream attributions of every (query, logit) into a verified Parquet artifact, one row group per kernel block."""
    n_t = len(train_ids)
    meta = {
        "orientation": "(query, logit, train)",
        "n_train": n_t,
        "n_logits": int(model.weight.shape[0]),
        "train_ids": [int(i) for i in train_ids],
        "definition": "A_c(x, x_j) = W_cj k(x, x_j) + b_c / N",
        **provenance,
    }
    schema = pa.schema([("query_id", pa.int64()), ("logit", pa.int16()), ("values", pa.list_(pa.float32(), n_t))])
    n_rows = 0
    with ParquetArtifactWriter(path, schema, ARTIFACT, meta, use_dictionary=False) as writer:
        for query_ids, k_rows in kernel_blocks:
            a = attributions(model, k_rows).astype(np.float32)  # (b, C_out, N)
            b, c, _ = a.shape
            values = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), n_t)
            qid = pa.array(np.repeat(np.asarray(query_ids, dtype=np.int64), c))
            logit = pa.array(np.tile(np.arange(c, dtype=np.int16), b))
            writer.write(pa.Table.from_arrays([qid, logit, values], schema=schema))
            n_rows += b
    return {**writer.meta, "n_query": n_rows}


def write_topk_attributions(
    path: str | Path,
    model: KGLM,
    kernel_blocks: Iterable[tuple[np.ndarray, sp.csr_matrix]],
    train_ids: np.ndarray,
    provenance: dict[str, Any],
    *,
    k: int,
) -> dict[str, Any]:
    """The attributions of a kGLM on a top-k kernel (kernel.storage: topk), one row group per block of CSR rows
    holding k entries each: per (query, logit) the k attributions W_cj κ(x, x_j) + b_c / N of the row's stored
    training points. Every other training point has κ = 0 in this surrogate, so its attribution is b_c / N, stored
    once per logit as ``rest``: the k values plus (N − k) · rest sum to the logit. At N = 50,000 the dense file
    would hold 2 billion values for 10,000 test points and 10 logits; this one k / N of them."""
    n_t, c = len(train_ids), int(model.weight.shape[0])
    rest = model.bias / n_t  # (C_out,)
    meta = {
        "orientation": "(query, logit, top-k of train)",
        "n_train": n_t,
        "n_logits": c,
        "topk": int(k),
        "train_ids": [int(i) for i in train_ids],
        "rest": [float(r) for r in rest],
        "definition": "A_c(x, x_j) = W_cj k(x, x_j) + b_c / N; rest (b_c / N) for each j not stored",
        **provenance,
    }
    schema = pa.schema(
        [
            ("query_id", pa.int64()),
            ("logit", pa.int16()),
            ("index", pa.list_(pa.int32(), k)),
            ("value", pa.list_(pa.float32(), k)),
        ]
    )
    n_rows = 0
    with ParquetArtifactWriter(path, schema, TOPK_ARTIFACT, meta, use_dictionary=False) as writer:
        for query_ids, rows in kernel_blocks:
            rows = sp.csr_matrix(rows)
            b = rows.shape[0]
            if not np.all(np.diff(rows.indptr) == k):
                raise ValueError(f"every kernel row must hold its {k} stored entries")
            index = rows.indices.reshape(b, k)  # (b, k)
            kv = rows.data.reshape(b, k).astype(np.float64)  # (b, k)
            a = model.weight[:, index].transpose(1, 0, 2) * kv[:, None, :] + rest[None, :, None]  # (b, C_out, k)
            writer.write(
                pa.Table.from_arrays(
                    [
                        pa.array(np.repeat(np.asarray(query_ids, dtype=np.int64), c)),
                        pa.array(np.tile(np.arange(c, dtype=np.int16), b)),
                        pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(index, c, axis=0).reshape(-1)), k),
                        pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1).astype(np.float32)), k),
                    ],
                    schema=schema,
                )
            )
            n_rows += b
    return {**writer.meta, "n_query": n_rows}


def read_topk_attributions(
    path: str | Path, expect: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (query_ids (b,), training columns (b, k), attributions (b, C_out, k), rest (C_out,)) per row group of a
    verified top-k attribution file."""
    meta, groups = verified_row_groups(path, TOPK_ARTIFACT, expect)
    c, k = meta["n_logits"], meta["topk"]
    for table in groups:
        index = table.column("index").combine_chunks().flatten().to_numpy().reshape(-1, c, k)[:, 0]
        values = table.column("value").combine_chunks().flatten().to_numpy().reshape(-1, c, k)
        yield table.column("query_id").to_numpy()[::c], index, values, np.asarray(meta["rest"])


def read_attributions(
    path: str | Path, expect: dict[str, Any] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (query_ids (b,), attributions (b, C_out, N)) per row group of a verified file."""
    meta, groups = verified_row_groups(path, ARTIFACT, expect)
    c, n = meta["n_logits"], meta["n_train"]
    for table in groups:
        values = table.column("values").combine_chunks().flatten().to_numpy().reshape(-1, c, n)
        yield table.column("query_id").to_numpy()[::c], values


def class_summary(
    model: KGLM, kernel_blocks: Iterable[np.ndarray], train_labels: np.ndarray, n_classes: int
) -> np.ndarray:
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
