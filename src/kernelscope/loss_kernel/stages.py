"""The loss-kernel stage on a trained classifier: SGLD probe sampling, loss kernels, label agreement.

The probe set is every training and test point, so the loss kernels split into a train × train
and a test × train block stored like every other kernel (kinds ``loss_cov`` and ``loss_corr``),
and the kGLM, explain and report steps use them unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from kernelscope.core.artifacts import write_parquet
from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import kernel_provenance, run_model
from kernelscope.core.results import StageResult
from kernelscope.kernels.registry import kinds_written_by
from kernelscope.kernels.store import write_kernel
from kernelscope.loss_kernel.kernel import loss_correlation, loss_covariance
from kernelscope.loss_kernel.sgld import SGLDConfig, sample
from kernelscope.models.heads import precise_per_sample_loss

LOSS_KINDS = kinds_written_by("loss_kernel")  # loss_cov, loss_corr (kernelscope.kernels.builtin)


def label_agreement(r: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """How often a point's k nearest neighbours under R (itself excluded) share its label, against the base rate
    Σ_c p_c²."""
    r = np.array(r, dtype=np.float64)
    np.fill_diagonal(r, -np.inf)
    neighbours = np.argsort(-r, axis=1, kind="stable")[:, :k]
    agreement = float((labels[neighbours] == labels[:, None]).mean())
    share = np.bincount(labels) / len(labels)
    base = float((share**2).sum())
    return {"agreement": agreement, "base_rate": base, "lift": agreement / base}


def write_probe_losses(
    path: Any, losses: np.ndarray, at_optimum: np.ndarray, probe_ids: np.ndarray, meta: dict[str, Any]
) -> None:
    """Parquet, one row per probe point: id, ℓ(z; w*), and a fixed-size list of chains × draws losses (chain-major)."""
    n, c, d = losses.shape
    values = pa.FixedSizeListArray.from_arrays(pa.array(losses.reshape(-1).astype(np.float32)), c * d)
    table = pa.table(
        {
            "probe_id": pa.array(probe_ids, pa.int64()),
            "loss_at_optimum": pa.array(at_optimum.astype(np.float32)),
            "losses": values,
        }
    )
    write_parquet(path, table, "probe-losses", {**meta, "chains": c, "draws": d})


def loss_kernel_stage(params: Params, layout: RunLayout, progress: bool = False) -> StageResult:
    from kernelscope.loss_kernel.plots import (
        correlation_heatmap,
        group_covariances,
        loss_traces,
        umap_embedding,
        umap_map,
    )

    lk = params.loss_kernel
    ds, ckpt = run_model(params, layout)  # finite weights, else SGLD "diverges" at step 0 and blames epsilon
    model = ckpt.model.eval()
    dtype = next(model.parameters()).dtype
    x_train, y_train = torch.from_numpy(ds.train.x).to(dtype), torch.from_numpy(ds.train.y)
    x_probe = torch.cat([x_train, torch.from_numpy(ds.test.x).to(dtype)])
    y_probe = torch.cat([y_train, torch.from_numpy(ds.test.y)])
    config = SGLDConfig.from_section(lk, "loss_kernel", lk.batch_size, params.seed, lk.threads)
    result = sample(model, precise_per_sample_loss, x_train, y_train, x_probe, y_probe, config, progress=progress)
    n_train = len(ds.train.y)
    probe_ids = np.concatenate([ds.train.ids, ds.test.ids])
    out = layout.root / "loss_kernel"
    provenance = {
        "checkpoint_hash": ckpt.checkpoint_hash,
        "dataset_hash": ds.dataset_hash,
        "sgld": lk.model_dump(mode="json"),
        "seed": params.seed,
    }
    write_probe_losses(
        out / "probe_losses.parquet",
        result.probe_losses,
        result.loss_at_optimum,
        probe_ids,
        {**provenance, "orientation": "(probe, chain, draw)", "n_train_probes": n_train},
    )
    cov = loss_covariance(result.probe_losses, center_chains=lk.center_chains)
    corr = loss_correlation(cov)
    for kind, matrix in (("loss_cov", cov), ("loss_corr", corr)):
        for split, rows in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
            write_kernel(
                layout.kernel_path(kind, split),
                matrix[rows, :n_train],
                probe_ids[rows],
                ds.train.ids,
                kernel_provenance(params, kind, ckpt.checkpoint_hash, ds.dataset_hash, split),
            )
    agreement = label_agreement(corr, np.concatenate([ds.train.y, ds.test.y]), lk.neighbours)
    if ds.name in lk.hierarchies:
        from kernelscope.data.hierarchy import load_hierarchy, taxonomic_lift

        name, superclass_of, _ = load_hierarchy(lk.hierarchies[ds.name], ds.n_classes)
        agreement.update(
            {
                **taxonomic_lift(corr, np.concatenate([ds.train.y, ds.test.y]), superclass_of, lk.neighbours),
                "hierarchy": name,
            }
        )
    traces = loss_traces(
        out / "traces.png", result.trace, result.train_loss_at_optimum, f"{ds.name}: SGLD minibatch loss per chain"
    )
    labels = np.concatenate([ds.train.y, ds.test.y])
    heatmap = correlation_heatmap(out / "correlation.png", corr, labels, f"{ds.name}: loss correlation")
    groups = group_covariances(
        out / "covariance_groups.png", cov, labels, f"{ds.name}: loss covariance within and across labels"
    )
    umap_plot = (
        umap_map(
            out / "umap.png",
            umap_embedding(corr, seed=params.seed),
            {"label": (labels, "tab10")},
            f"{ds.name}: UMAP of 1 − R",
        )
        if lk.umap
        else None
    )
    summary = {
        "checkpoint_hash": ckpt.checkpoint_hash,
        "llc": result.llc,
        **result.step_summary(),
        "llc_per_chain": result.llc_per_chain.tolist(),
        "nbeta": result.nbeta,
        "train_loss_at_optimum": result.train_loss_at_optimum,
        "warnings": result.warnings,
        **{(f"label_{k}" if k in ("agreement", "base_rate", "lift") else k): v for k, v in agreement.items()},
        "traces_plot": str(traces),
        "heatmap": str(heatmap),
        "groups_plot": str(groups),
        "umap_plot": str(umap_plot) if umap_plot else None,
        "probe_losses": str(out / "probe_losses.parquet"),
        "path": str(layout.kernel_path("loss_corr", "test")),
    }
    write_json_artifact(out / "summary.json", summary, "loss-kernel-summary")
    kernels = [layout.kernel_path(kind, split) for kind in LOSS_KINDS for split in ("train", "test")]
    plots = [p for p in (traces, heatmap, groups, umap_plot) if p is not None]
    return StageResult.of(summary, [out / "probe_losses.parquet", *kernels, *plots, out / "summary.json"])


def track_loss_kernel(
    params: Params,
    dataset: str,
    summary: dict[str, Any],
    *,
    kglm: dict[str, dict[str, Any]] | None = None,
    source: str | None = None,
) -> str:
    """Log a loss-kernel run to the 'loss-kernel' experiment: LLC, label agreement, lifts, kGLM scores, figures."""
    from kernelscope.core.params import params_hash
    from kernelscope.core.tracking import RunTags, log_run

    keys = ("llc", "label_agreement", "label_base_rate", "label_lift", "superclass_agreement", "taxonomic_lift")
    metrics = {k: float(summary[k]) for k in keys if k in summary}
    for kind, r in (kglm or {}).items():
        metrics.update({f"tau_k.{kind}": r["tau_k"], f"kglm_accuracy.{kind}": r["kglm_accuracy"]})
    tags = RunTags(
        "loss-kernel",
        dataset,
        ",".join(LOSS_KINDS),
        params.seed,
        params_hash(params),
        {"checkpoint_hash": summary["checkpoint_hash"], "warnings": str(len(summary["warnings"]))},
    )
    plots = [summary[k] for k in ("traces_plot", "heatmap", "groups_plot", "umap_plot") if summary.get(k)]
    return log_run(
        "loss-kernel",
        f"{dataset}-loss-kernel",
        tags=tags,
        params={"loss_kernel": params.loss_kernel.model_dump(mode="json"), "seed": params.seed},
        metrics=metrics,
        artifacts=plots,
        source=source,
    )
