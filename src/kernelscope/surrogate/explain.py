"""Explain one input: predictions, most similar and most attributed training points, pictures.

The input is a test point of a run (by index) or a new input from a file (.npz or .parquet).
Outputs go to ``<run>/explain/<name>/``: report.md, a box plot of attributions per training
class (the paper's Fig. 2C) and, for image data, a grid of the query and its top-5 most similar
training images under each kernel (the paper's App. M.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.fileio import write_text_atomic
from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.core.params import Params
from kernelscope.core.provenance import kernel_options, kernel_storage, kglm_provenance, run_model
from kernelscope.data.datasets import Dataset
from kernelscope.kernels import compute_kernel
from kernelscope.kernels.stages import read_run_kernel
from kernelscope.kernels.topk import TopkRows, dense_rows
from kernelscope.models.checkpoint import Checkpoint
from kernelscope.models.heads import predictions, probabilities
from kernelscope.models.train import predict_logits
from kernelscope.surrogate.attribution import attributions
from kernelscope.surrogate.kglm import load_kglm


def load_inputs(path: str | Path, n_features: int) -> np.ndarray:
    """Inputs (n, n_features) float32 from .npz (the array 'x') or .parquet ('features' column)."""
    path = Path(path)
    if not path.is_file():
        raise KernelscopeError(f"{path}: input file not found; pass an existing .npz or .parquet file.")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:  # never unpickle a user's file
                names = list(archive.files)
                if "x" not in names:  # never guess: a lone array of another name may be labels or anything else
                    raise KernelscopeError(
                        f"{path}: holds arrays {names} but no array 'x'; "
                        "save the inputs as x (np.savez(path, x=inputs))."
                    )
                x = archive["x"]
        except ValueError as error:
            raise KernelscopeError(
                f"{path}: not a readable .npz without pickled objects ({error}); save plain numeric arrays."
            ) from None
    elif path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise KernelscopeError(f"{path}: not a readable Parquet file ({error.__class__.__name__}).") from None
        if "features" not in table.column_names:
            raise KernelscopeError(
                f"{path}: has no 'features' column (columns: {table.column_names}); "
                f"add one with {n_features} values per row."
            )
        column = table.column("features").combine_chunks()
        x = np.asarray(column.to_pylist(), dtype=np.float64)
    else:
        raise KernelscopeError(f"{path}: unsupported suffix '{path.suffix}'; use .npz or .parquet.")
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise KernelscopeError(
            f"{path}: field 'x' holds no inputs (shape {x.shape}); save at least one input of {n_features} values."
        )
    if x.ndim == 1:
        x = x[None, :]
    x = x.reshape(len(x), -1)
    if not np.issubdtype(x.dtype, np.number):
        raise KernelscopeError(f"{path}: field 'x' has dtype {x.dtype}; inputs must be numeric.")
    if x.shape[1] != n_features:
        raise KernelscopeError(
            f"{path}: field 'x' has {x.shape[1]} features per input but the model takes {n_features}; "
            "reshape the input."
        )
    if not np.all(np.isfinite(x)):
        raise KernelscopeError(f"{path}: field 'x' contains NaN or infinite values; clean the input.")
    return x.astype(np.float32)


@dataclass(frozen=True)
class Query:
    name: str
    x: np.ndarray  # (d,)
    label: int | None
    test_index: int | None


def kernel_row(
    params: Params, layout: Any, ds: Dataset, ckpt: Checkpoint, kind: str, query: Query
) -> tuple[np.ndarray, np.ndarray | None]:
    """κ(query, training set) as (N,) — read from the verified test kernel of these params, or computed for a
    new input — and, for a top-k kernel (kernel.storage: topk), which entries it stores (N,) bool (the others are 0,
    as in the kGLM fit on it; a new input keeps its own top k); None for a dense kernel."""
    storage = kernel_storage(params, kind)
    if query.test_index is not None:
        k_test, _ = read_run_kernel(params, layout, ds, ckpt.checkpoint_hash, kind, "test", ds.test.ids)
        row = dense_rows(k_test[query.test_index : query.test_index + 1])[0]
        if storage == "dense":
            return row, None
        stored = np.zeros(len(row), dtype=bool)
        stored[k_test[query.test_index].indices] = True
        return row, stored
    row = compute_kernel(
        ckpt.model,
        torch.from_numpy(query.x[None]),
        torch.from_numpy(ds.train.x),
        kind=kind,
        **kernel_options(params, kind),
    )[0]
    if storage == "dense":
        return row, None
    reduced = TopkRows.of(row[None], params.kernel.topk)  # what the kernel file would hold for it
    kept, stored = np.zeros(len(row)), np.zeros(len(row), dtype=bool)
    kept[reduced.index[0]], stored[reduced.index[0]] = reduced.value[0], True
    return kept, stored


def explain(params: Params, layout: Any, kinds: list[str], query: Query, top_k: int) -> dict[str, Any]:
    from kernelscope.surrogate.plots import attribution_boxplot, neighbour_grid

    ds, ckpt = run_model(params, layout)
    nn_logits = predict_logits(ckpt.model, query.x[None])[0]
    nn_prob, nn_pred = probabilities(nn_logits), int(predictions(nn_logits[None])[0])
    out = layout.root / "explain" / query.name
    result: dict[str, Any] = {
        "query": query.name,
        "label": query.label,
        "nn_prediction": nn_pred,
        "nn_probabilities": nn_prob.round(6).tolist(),
        "kernels": {},
    }
    neighbours = {}
    # Every kind's verified inputs first, so a refused file leaves no partial explanation behind.
    inputs = {
        kind: (
            kernel_row(params, layout, ds, ckpt, kind, query),
            load_kglm(
                layout.kglm_dir(kind) / "kglm.safetensors",
                expect=kglm_provenance(params, kind, ckpt.checkpoint_hash, ds.dataset_hash),
            ),
        )
        for kind in kinds
    }
    for kind, ((row, stored), surrogate) in inputs.items():
        logits = surrogate.logits(row[None])[0]
        prob, predicted = probabilities(logits), int(predictions(logits[None])[0])
        a = attributions(surrogate, row[None])[0]  # (C_out, N)
        # The most similar among the stored entries of a top-k kernel (a missing entry is not a similarity of 0).
        rank = row if stored is None else np.where(stored, row, -np.inf)
        similar = np.argsort(-rank, kind="stable")[: top_k if stored is None else min(top_k, int(stored.sum()))]
        top_attr = {
            int(c): [
                {"train_id": int(ds.train.ids[j]), "label": int(ds.train.y[j]), "attribution": float(a[c, j])}
                for j in np.argsort(-a[c], kind="stable")[:top_k]
            ]
            for c in range(a.shape[0])
        }
        result["kernels"][kind] = {
            "kglm_prediction": predicted,
            "kglm_probabilities": prob.round(6).tolist(),
            "most_similar": [
                {"train_id": int(ds.train.ids[j]), "label": int(ds.train.y[j]), "similarity": float(row[j])}
                for j in similar
            ],
            "top_attribution_per_logit": top_attr,
        }
        neighbours[kind] = similar[:5]
        if kind == kinds[0]:
            predicted_logit = 0 if a.shape[0] == 1 else predicted  # one logit: its row explains both classes
            result["boxplot"] = str(
                attribution_boxplot(
                    out / "attribution_by_class.png",
                    a[predicted_logit],
                    ds.train.y,
                    ds.n_classes,
                    f"{query.name} · {kind}: attribution to logit {predicted_logit} by training class",
                )
            )
    if len(ds.image_shape) == 2 and int(np.prod(ds.image_shape)) == query.x.shape[0]:
        result["grid"] = str(
            neighbour_grid(
                out / "neighbours.png",
                query.x.reshape(ds.image_shape),
                {k: ds.train.x[v].reshape(-1, *ds.image_shape) for k, v in neighbours.items()},
                {k: ds.train.y[v] for k, v in neighbours.items()},
                query.label,
            )
        )
    result["report"] = str(_write_report(out / "report.md", result))
    write_json_artifact(out / "explanation.json", result, "explanation")
    return result


def _write_report(path: Path, r: dict[str, Any]) -> Path:
    lines = [f"# Explanation of {r['query']}", ""]
    if r["label"] is not None:
        lines.append(f"True label: **{r['label']}**  ")
    lines += [f"NN prediction: **{r['nn_prediction']}**, probabilities {r['nn_probabilities']}", ""]
    lines += [
        "| kernel | kGLM prediction | kGLM probabilities | top-5 similar training points (id:label) |",
        "|---|---:|---|---|",
    ]
    for kind, k in r["kernels"].items():
        sims = ", ".join(f"{s['train_id']}:{s['label']}" for s in k["most_similar"][:5])
        lines.append(f"| {kind} | {k['kglm_prediction']} | {k['kglm_probabilities']} | {sims} |")
    lines.append("")
    for kind, k in r["kernels"].items():
        lines += [f"## {kind}: highest-attribution training points per logit", ""]
        for logit, items in k["top_attribution_per_logit"].items():
            lines.append(
                f"- logit {logit}: "
                + ", ".join(f"{i['train_id']}:{i['label']} ({i['attribution']:+.3g})" for i in items)
            )
        lines.append("")
    for key, title in (
        ("boxplot", "Attribution by training class"),
        ("grid", "Query and its top-5 most similar training images"),
    ):
        if key in r:
            lines += [f"## {title}", "", f"![{title}]({Path(r[key]).name})", ""]
    return write_text_atomic(path, "\n".join(lines))


def track_explain(
    params: Any,
    dataset: str,
    query_name: str,
    kinds: list[str],
    top_k: int,
    result: dict[str, Any],
    source: str | None = None,
) -> str:
    """Log one explanation to the 'explain' experiment (the prediction, the report and its pictures)."""
    from kernelscope.core.params import params_hash
    from kernelscope.core.tracking import RunTags, log_run

    return log_run(
        "explain",
        f"{dataset}-{query_name}",
        tags=RunTags("explain", dataset, ",".join(kinds), params.seed, params_hash(params), {"query": query_name}),
        params={"dataset": dataset, "query": query_name, "kinds": kinds, "top_k": top_k},
        metrics={"nn_prediction": result["nn_prediction"]},
        artifacts=[result[k] for k in ("report", "boxplot", "grid") if k in result],
        source=source,
    )
