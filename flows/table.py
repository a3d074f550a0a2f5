"""The multi-seed faithfulness table (the paper's Table 1): n_models seeds per dataset and architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.attribution import source_hash
from kernelscope.core.params import Params, params_hash
from kernelscope.core.stage_reads import stage_sections
from kernelscope.surrogate.table import METRICS, seed_table, write_table
from kernelscope.core.tracking import RunTags, log_parent_with_children
from tasks.attribution import prepare_data, seed_run
from tasks.fanout import Fanout


@flow(name="faithfulness-table")
def faithfulness_table(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train table.n_models seeded models per dataset and architecture; aggregate τ_K, TAD, R_Miss, accuracy.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    root = Path(outputs or params.outputs) / "table"
    tp = params.table
    with Fanout(params.scale) as fan:
        jobs = []
        for dataset in params.datasets:
            data = fan.run(prepare_data, sections=stage_sections(params, "data", dataset), dataset=dataset,
                           root=str(root / dataset), source_hash=source_hash(params, dataset)).summary
            for arch in tp.archs:
                for seed in range(params.seed + 1, params.seed + 1 + tp.n_models):
                    jobs.append(dict(sections=stage_sections(params, "seed_run", dataset), arch=arch, seed=seed,
                                     kind=tp.kind, root=str(root / dataset / f"{arch}-seed{seed}"), data_dir=str(root / dataset / "data"),
                                     dataset_hash=data["dataset_hash"], data_seed=params.seed))
        rows = [row.summary for row in fan.map(seed_run, jobs)]
    logger.info("%d seed runs, %d from cache", len(rows), fan.ledger.hits)
    table = seed_table(rows)
    artifacts = write_table(table, root)
    for t in table:
        logger.info("%s %s (%d seeds): tau_K %s  TAD %s  NN acc %s", t["dataset"], t["arch"], t["n_models"],
                    t["tau_k"]["text"], t["tad"]["text"], t["nn_accuracy"]["text"])
    run_id = None
    if track:
        metrics = {f"{key}.{t['dataset']}.{t['arch']}.{stat}": t[key][stat] for t in table for key, _, _, _ in METRICS for stat in ("mean", "se")}
        children = [{"name": f"{r['dataset']}-{r['arch']}-seed{r['seed']}",
                     "params": {"dataset": r["dataset"], "arch": r["arch"], "seed": r["seed"], "kernel": r["kind"]},
                     "metrics": {k: r[k] for k in ("tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")},
                     "tags": {"dataset": r["dataset"], "arch": r["arch"], "seed": str(r["seed"]), "checkpoint_hash": r["checkpoint_hash"]},
                     "artifacts": [r["plot"]]} for r in rows]
        tags = RunTags("faithfulness-table", ",".join(params.datasets), tp.kind, params.seed, params_hash(params), {"n_models": str(tp.n_models)})
        run_id = log_parent_with_children(
            "faithfulness-table", f"table-{tp.n_models}-seeds", tags=tags,
            params={"table": tp.model_dump(mode="json"), "kglm": params.kglm.model_dump(mode="json")},
            metrics=metrics, artifacts=artifacts, children=children)
    return {"table": table, "artifacts": artifacts, "mlflow_run_id": run_id}
