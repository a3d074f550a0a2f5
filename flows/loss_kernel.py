"""The loss-kernel flows: SGLD probe sampling around an attribution run's checkpoint, loss kernels, kGLMs;
and the multitask validation on modular arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.sections import kglm_sections
from flows.summary_tables import loss_kernel_table, multitask_table
from kernelscope.core.layout import RunLayout
from kernelscope.core.param_types import DatasetName
from kernelscope.core.params import Params, params_hash
from kernelscope.core.stage_reads import stage_sections
from kernelscope.core.tracking import RunTags, log_run
from kernelscope.loss_kernel.stages import LOSS_KINDS, track_loss_kernel
from tasks.artifacts import publish_results
from tasks.fanout import Fanout
from tasks.loss_kernel import multitask_loss_kernel, sample_probe_losses, train_multitask_model
from tasks.surrogate import evaluate, train_kglm


@flow(name="loss-kernel")
def loss_kernel(
    params: Params, dataset: DatasetName = "digits10", outputs: str | None = None, track: bool = True
) -> dict[str, Any]:
    """SGLD probe losses around the dataset's model, loss kernels and their kGLMs. Run attribution first.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        dataset: whose attribution-run model and data to probe.
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    layout = RunLayout.at(outputs or params.outputs, dataset)
    checkpoint_hash = layout.checkpoint_hash()
    root = str(layout.root)
    with Fanout(params.scale) as fan:
        summary = fan.run(
            sample_probe_losses,
            sections=stage_sections(params, "loss_kernel", dataset),
            root=root,
            checkpoint_hash=checkpoint_hash,
        ).summary
        for warning in summary["warnings"]:
            logger.warning("SGLD health: %s", warning)
        fitted = fan.map(
            train_kglm,
            [
                dict(
                    sections=kglm_sections(params, kind, dataset),
                    root=root,
                    kind=kind,
                    kernel_train=str(layout.kernel_path(kind, "train")),
                    checkpoint_hash=checkpoint_hash,
                )
                for kind in LOSS_KINDS
            ],
        )
        evaluated = fan.map(
            evaluate,
            [
                dict(
                    sections=kglm_sections(params, kind, dataset),
                    root=root,
                    kind=kind,
                    kglm_sha256=f.summary["kglm_sha256"],
                    checkpoint_hash=checkpoint_hash,
                )
                for kind, f in zip(LOSS_KINDS, fitted)
            ],
        )
    results = {kind: e.summary for kind, e in zip(LOSS_KINDS, evaluated)}
    logger.info(
        "%s: LLC %.3f; label agreement of 10 nearest under R %.3f (base rate %.3f, lift %.2f)",
        dataset,
        summary["llc"],
        summary["label_agreement"],
        summary["label_base_rate"],
        summary["label_lift"],
    )
    run_id = track_loss_kernel(params, dataset, summary, kglm=results) if track else None
    result = {
        "summary": summary,
        "kglm": results,
        "cache_hits": fan.ledger.hits,
        "tasks": fan.ledger.runs,
        "mlflow_run_id": run_id,
    }
    publish_results(
        "loss-kernel",
        dataset,
        [loss_kernel_table({dataset: result})],
        {
            "LLC λ̂": summary["llc"],
            "label agreement@10 under R": summary["label_agreement"],
            "lift over the base rate": summary["label_lift"],
            "sampler health warnings": len(summary["warnings"]),
        },
        experiment="loss-kernel",
        run_ids={dataset: run_id} if run_id else None,
    )
    return result


@flow(name="loss-kernel-multitask")
def multitask(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train one model on modular addition and division, sample losses around it, and test whether the
    loss kernel separates the two tasks (ROC-AUC of the first principal component; the paper: 0.931).

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    root = str(Path(outputs or params.outputs) / "multitask")
    with Fanout(params.scale) as fan:
        trained = fan.run(train_multitask_model, sections=stage_sections(params, "multitask_train"), root=root).summary
        accuracy = {k: round(v, 4) for k, v in trained.items() if k.startswith(("train_", "test_"))}
        logger.info("modular model accuracy: %s; grokked at step %s", accuracy, trained["steps_to_grok"])
        summary = fan.run(
            multitask_loss_kernel,
            sections=stage_sections(params, "multitask_loss_kernel"),
            root=root,
            checkpoint_hash=trained["checkpoint_hash"],
        ).summary
    logger.info(
        "task separation ROC-AUC %.3f (within-chain %.3f)", summary["task_auc"], summary["task_auc_within_chain"]
    )
    for warning in summary["warnings"]:
        logger.warning("SGLD health: %s", warning)
    run_id = None
    if track:
        metrics = {k: v for k, v in {**trained, **summary}.items() if isinstance(v, float)}
        tags = RunTags(
            "loss-kernel-multitask",
            f"modular-{params.multitask.p}",
            ",".join(LOSS_KINDS),
            params.seed,
            params_hash(params),
            {"checkpoint_hash": trained["checkpoint_hash"]},
        )
        run_id = log_run(
            "loss-kernel",
            "multitask",
            tags=tags,
            params={"multitask": params.multitask.model_dump(mode="json"), "seed": params.seed},
            metrics=metrics,
            artifacts=[*summary["plots"], *trained.get("plots", [])],  # results cached before plots were listed: none
        )
    result = {
        "accuracy": trained,
        "summary": summary,
        "mlflow_run_id": run_id,
        "cache_hits": fan.ledger.hits,
        "tasks": fan.ledger.runs,
    }
    publish_results(
        "loss-kernel-multitask",
        f"modular-{params.multitask.p}",
        [multitask_table(params, result)],
        {
            "steps to grok": trained["steps_to_grok"],
            "task separation ROC-AUC": summary["task_auc"],
            "task contrast z": summary.get("task_contrast_z", float("nan")),
            "sampler health warnings": len(summary["warnings"]),
        },
        experiment="loss-kernel",
        run_ids={"multitask": run_id} if run_id else None,
    )
    return result
