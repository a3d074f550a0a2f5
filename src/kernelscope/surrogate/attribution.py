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

from kernelscope.core.artifacts import ParquetArtifactWriter, verified_row_groups
from kernelscope.surrogate.kglm import KGLM

ARTIFACT = "attributions"


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
