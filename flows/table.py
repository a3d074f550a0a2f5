"""The multi-seed faithfulness table (the paper's Table 1): n_models seeds per dataset and architecture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.attribution import sections
from kernelscope.params import Params, load_params
from kernelscope.pipeline import RunLayout, params_hash
from kernelscope.table import METRICS, seed_table, write_table
from kernelscope.tracking import log_parent_with_children
from tasks.attribution import prepare_data, seed_run
from tasks.caching import CacheLedger


@flow(name="faithfulness-table", task_runner=ThreadPoolTaskRunner(max_workers=8))
def faithfulness_table(params_path: str = "params.yaml", outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train table.n_models seeded models per dataset and architecture; aggregate τ_K, TAD, R_Miss, accuracy."""
    logger = get_run_logger()
    params = load_params(params_path)
    tp = params.table
    root = Path(outputs or params.outputs) / "table"
    # Seeds run side by side; give each its share of the cores instead of oversubscribing them.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // tp.concurrency))
    try:
        return _run_table(params, root, logger, track)
    finally:
        torch.set_num_threads(threads)  # later flows in this process keep their thread count


def _run_table(params: Params, root: Path, logger: Any, track: bool) -> dict[str, Any]:
    tp = params.table
    jobs = []
    for dataset in params.datasets:
        data = CacheLedger()(prepare_data, sections=sections(params, "seed", "data"), dataset=dataset, root=str(root / dataset))
        for arch in tp.archs:
            for seed in range(params.seed + 1, params.seed + 1 + tp.n_models):
                jobs.append(dict(sections=sections(params, "device", "train", "cnn", "kernel", "kglm"), arch=arch, seed=seed,
                                 kind=tp.kind, root=str(root / dataset / f"{arch}-seed{seed}"), data_dir=str(root / dataset / "data"),
                                 dataset_hash=data["dataset_hash"]))
    ledger = CacheLedger()
    rows = []
    for start in range(0, len(jobs), tp.concurrency):  # waves of `concurrency` seeds in flight at once
        wave = jobs[start : start + tp.concurrency]
        futures = [seed_run.submit(**job) for job in wave]
        for future, job in zip(futures, wave):
            future.wait()
            rows.append(ledger.settle(seed_run, job, future.state))
    logger.info("%d seed runs, %d from cache", ledger.runs, ledger.hits)
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
        run_id = log_parent_with_children(
            "faithfulness-table", f"table-{tp.n_models}-seeds", params={"table": tp.model_dump(mode="json"), "kglm": params.kglm.model_dump(mode="json")},
            metrics=metrics, tags={"flow": "faithfulness-table", "kernel": tp.kind, "params_hash": params_hash(params)},
            artifacts=artifacts, children=children)
    return {"table": table, "artifacts": artifacts, "mlflow_run_id": run_id}
