"""The loss-kernel flow: SGLD probe sampling around an attribution run's checkpoint, loss kernels, kGLMs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.attribution import sections
from kernelscope.loss_stages import LOSS_KINDS
from kernelscope.params import load_params
from kernelscope.pipeline import RunLayout, params_hash
from kernelscope.tracking import log_run
from tasks.attribution import evaluate, train_kglm
from tasks.caching import CacheLedger
from tasks.loss_kernel import multitask_loss_kernel, sample_probe_losses, train_modular_model


@flow(name="loss-kernel")
def loss_kernel(dataset: str = "digits10", params_path: str = "params.yaml", outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Needs the attribution flow's data and model for this dataset (run it first)."""
    logger = get_run_logger()
    params = load_params(params_path)
    layout = RunLayout.at(outputs or params.outputs, dataset)
    meta = json.loads((Path(layout.model_dir) / "model.json").read_text())
    run = CacheLedger()
    summary = run(sample_probe_losses, sections=sections(params, "seed", "loss_kernel"), root=str(layout.root),
                  checkpoint_hash=meta["weights_sha256"])
    for warning in summary["warnings"]:
        logger.warning("SGLD health: %s", warning)
    results = {}
    for kind in LOSS_KINDS:
        fitted = run(train_kglm, sections=sections(params, "seed", "kglm"), root=str(layout.root), kind=kind,
                     kernel_train=str(layout.kernel_path(kind, "train")), checkpoint_hash=meta["weights_sha256"])
        results[kind] = run(evaluate, root=str(layout.root), kind=kind, kglm_sha256=fitted["kglm_sha256"], checkpoint_hash=meta["weights_sha256"])
    logger.info("%s: LLC %.3f; label agreement of 10 nearest under R %.3f (base rate %.3f, lift %.2f)", dataset, summary["llc"],
                summary["label_agreement"], summary["label_base_rate"], summary["label_lift"])
    run_id = None
    if track:
        metrics = {"llc": summary["llc"], "label_agreement": summary["label_agreement"], "label_lift": summary["label_lift"],
                   **({"taxonomic_lift": summary["taxonomic_lift"]} if "taxonomic_lift" in summary else {}),
                   **{f"tau_k.{k}": r["tau_k"] for k, r in results.items()}, **{f"kglm_accuracy.{k}": r["kglm_accuracy"] for k, r in results.items()}}
        run_id = log_run("loss-kernel", f"{dataset}-loss-kernel", params={"loss_kernel": params.loss_kernel.model_dump(mode="json"), "seed": params.seed},
                         metrics=metrics, tags={"flow": "loss-kernel", "source": "prefect", "dataset": dataset, "params_hash": params_hash(params),
                                                "checkpoint_hash": meta["weights_sha256"], "warnings": str(len(summary["warnings"]))},
                         artifacts=[p for p in (summary["traces_plot"], summary["heatmap"], summary["groups_plot"], summary["umap_plot"]) if p])
    return {"summary": summary, "kglm": results, "cache_hits": run.hits, "tasks": run.runs, "mlflow_run_id": run_id}


@flow(name="loss-kernel-multitask")
def multitask(params_path: str = "params.yaml", outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train one model on modular addition and division, sample losses around it, and test whether the
    loss kernel separates the two tasks (ROC-AUC of the first principal component; the paper: 0.931)."""
    logger = get_run_logger()
    params = load_params(params_path)
    root = str(Path(outputs or params.outputs) / "multitask")
    run = CacheLedger()
    trained = run(train_modular_model, sections=sections(params, "seed", "multitask"), root=root)
    logger.info("modular model accuracy: %s", {k: round(v, 4) for k, v in trained.items() if k != "checkpoint_hash" and k != "path"})
    summary = run(multitask_loss_kernel, sections=sections(params, "seed", "multitask"), root=root, checkpoint_hash=trained["checkpoint_hash"])
    logger.info("task separation ROC-AUC %.3f (within-chain %.3f)", summary["task_auc"], summary["task_auc_within_chain"])
    run_id = None
    if track:
        metrics = {k: v for k, v in {**trained, **summary}.items() if isinstance(v, float)}
        run_id = log_run("loss-kernel", "modular-multitask", params={"multitask": params.multitask.model_dump(mode="json"), "seed": params.seed},
                         metrics=metrics, tags={"flow": "loss-kernel-multitask", "source": "prefect", "dataset": f"modular-{params.multitask.p}",
                                                "checkpoint_hash": trained["checkpoint_hash"]}, artifacts=summary["plots"])
    return {"accuracy": trained, "summary": summary, "mlflow_run_id": run_id, "cache_hits": run.hits, "tasks": run.runs}
