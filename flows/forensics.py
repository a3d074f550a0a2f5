"""The forensics flow: BadNets poisoning, a poisoned model, kernels, detection and trace-back (Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.attribution import sections
from kernelscope.params import Params, load_params
from kernelscope.pipeline import params_hash
from kernelscope.tracking import log_run
from tasks.caching import CacheLedger
from tasks.forensics import assemble_forensic_kernel, detect, forensic_kglm, poison_data, train_poisoned


def forensic_sections(params: Params) -> dict[str, Any]:
    return sections(params, "seed", "device", "data", "train", "cnn", "kernel", "kglm", "poison")


@flow(name="forensics")
def forensics(params_path: str = "params.yaml", outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Poison a fraction of the training set, train on it, and find the poison again through each kernel."""
    logger = get_run_logger()
    params = load_params(params_path)
    p = params.poison
    root = str(Path(outputs or params.outputs) / "forensics" / p.dataset)
    run = CacheLedger()
    every = forensic_sections(params)
    data = run(poison_data, sections=sections(params, "seed", "data", "poison"), root=root)
    trained = run(train_poisoned, sections=sections(params, "seed", "train", "cnn", "poison"), root=root, dataset_hash=data["dataset_hash"])
    logger.info("poisoned model: clean test accuracy %.4f, attack success rate %.4f", trained["clean_test_accuracy"], trained["attack_success_rate"])
    faith = []
    for kind in p.kinds:
        kernel = run(assemble_forensic_kernel, sections=every, root=root, kind=kind, checkpoint_hash=trained["checkpoint_hash"])
        faith.append(run(forensic_kglm, sections=every, root=root, kind=kind, checkpoint_hash=kernel["checkpoint_hash"]))
    result = run(detect, sections=every, root=root, faith=faith)
    for row in result["rows"]:
        logger.info("%s: precision %.4f recall %.4f trace-back %.4f", row["kernel"], row["precision"], row["recall"], row["trace_precision"])
    run_id = None
    if track:
        metrics = {"clean_test_accuracy": trained["clean_test_accuracy"], "attack_success_rate": trained["attack_success_rate"]}
        for row in result["rows"]:
            metrics.update({f"{key}.{row['kernel']}": row[key] for key in ("precision", "recall", "trace_precision", "trace_recall",
                                                                          "clean_tau_k", "poisoned_tau_k")})
        run_id = log_run("forensics", f"{p.dataset}-badnets", params={"poison": p.model_dump(mode="json"), "seed": params.seed},
                         metrics=metrics, tags={"flow": "forensics", "source": "prefect", "dataset": p.dataset, "params_hash": params_hash(params),
                                                "checkpoint_hash": trained["checkpoint_hash"]}, artifacts=result["artifacts"])
    return {**result, "clean_test_accuracy": trained["clean_test_accuracy"], "attack_success_rate": trained["attack_success_rate"],
            "n_poisoned": data["n_poisoned"], "cache_hits": run.hits, "tasks": run.runs, "mlflow_run_id": run_id}
