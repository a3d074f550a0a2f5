"""The loss-kernel sweep flow: is the multitask task separation robust across training seeds and sampler settings?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from kernelscope.core.params import Params, params_hash
from kernelscope.core.stage_reads import stage_sections
from kernelscope.core.tracking import RunTags, log_parent_with_children
from kernelscope.loss_kernel.stages import LOSS_KINDS
from kernelscope.loss_kernel.sweep import cell_params, grid, seed_params
from tasks.fanout import Fanout
from tasks.loss_kernel import sweep_cell, sweep_report, train_multitask_model

EXPERIMENT = "loss-kernel-sweep"


@flow(name="loss-kernel-sweep")
def loss_kernel_sweep(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train the modular model for every seed of loss_kernel_sweep.seeds, run the sampler over the grid
    loss_kernel_sweep.epsilon × gamma × nbeta around each (one cached task per cell, spread by scale), and draw
    task-separation heat maps with the health verdict per cell and the fraction of robust cells.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts (under multitask/sweep); empty: params.outputs.
        track: log one MLflow run per seed (a child run per cell) to the 'loss-kernel-sweep' experiment.
    """
    logger = get_run_logger()
    seeds = params.loss_kernel_sweep.seeds
    root = Path(outputs or params.outputs) / "multitask" / "sweep"
    cells = grid(params)
    with Fanout(params.scale) as fan:
        trained = fan.map(
            train_multitask_model,
            [
                dict(sections=stage_sections(seed_params(params, s), "multitask_train"), root=str(root / f"seed{s}"))
                for s in seeds
            ],
        )
        for seed, t in zip(seeds, trained):
            logger.info("training seed %d: grokked at step %s", seed, t.summary["steps_to_grok"])
        sampled = fan.map(
            sweep_cell,
            [
                dict(
                    sections=stage_sections(cell_params(params, s, cell), "multitask_sweep_cell"),
                    root=str(root / f"seed{s}"),
                    checkpoint_hash=t.summary["checkpoint_hash"],
                )
                for s, t in zip(seeds, trained)
                for cell in cells
            ],
        )
        report = fan.run(
            sweep_report,
            sections=stage_sections(params, "multitask_sweep_report"),
            root=str(root),
            cells=[r.summary for r in sampled],
        ).summary
        hits, runs = fan.ledger.hits, fan.ledger.runs
    for seed, entry in report["seeds"].items():
        logger.info(
            "seed %s: %.0f%% of cells robust; default setting AUC %s%s",
            seed,
            100 * entry["robust_fraction"],
            entry.get("default_auc"),
            "" if entry.get("default_healthy", True) else " (health warning)",
        )
    run_ids = track_sweep(params, report, [t.summary for t in trained]) if track else []
    return {"report": report, "mlflow_run_ids": run_ids, "cache_hits": hits, "tasks": runs}


def track_sweep(params: Params, report: dict[str, Any], trained: list[dict[str, Any]]) -> list[str]:
    """One MLflow run per training seed (its heat map, robust fraction, default-setting AUC) with a child run per
    cell (ε, γ, nβ as params; AUC and LLC as metrics; the verdict as a tag)."""
    sweep = params.loss_kernel_sweep
    run_ids = []
    for seed, model in zip(sweep.seeds, trained):
        entry = report["seeds"][str(seed)]
        metrics = {"robust_fraction": entry["robust_fraction"]}
        if model["steps_to_grok"] is not None:
            metrics["steps_to_grok"] = model["steps_to_grok"]
        if entry.get("default_auc") is not None:
            metrics["default_task_auc"] = entry["default_auc"]
        children = [
            {
                "name": f"eps{c['epsilon']:g} gamma{c['gamma']:g} nbeta{c['nbeta']:g}",
                "params": {"epsilon": c["epsilon"], "gamma": c["gamma"], "nbeta": c["nbeta"]},
                "metrics": {k: c[k] for k in ("task_auc", "task_auc_within_chain", "llc") if c[k] is not None},
                "tags": {"healthy": str(c["healthy"]).lower(), "warnings": " | ".join(c["warnings"])[:5000]},
            }
            for c in entry["cells"]
        ]
        tags = RunTags(
            EXPERIMENT,
            f"modular-{params.multitask.p}",
            ",".join(LOSS_KINDS),
            seed,
            params_hash(params),
            {"checkpoint_hash": model["checkpoint_hash"]},
        )
        plots = [p for p in report["plots"] if p.endswith(f"heatmap_seed{seed}.png")] + [report["path"]]
        run_ids.append(
            log_parent_with_children(
                EXPERIMENT,
                f"seed {seed}",
                tags=tags,
                params={"loss_kernel_sweep": sweep.model_dump(mode="json"), "multitask": params.multitask.model_dump()},
                metrics=metrics,
                artifacts=plots,
                children=children,
            )
        )
    return run_ids
