"""The forensics flow: BadNets poisoning, a poisoned model, kernels, detection and trace-back (Table 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.summary_tables import forensics_table
from kernelscope.core.params import Params
from kernelscope.core.provenance import POISONED_SUFFIX
from kernelscope.core.stage_reads import stage_sections
from kernelscope.forensics.stages import track_forensics
from tasks.artifacts import publish_results
from tasks.fanout import Fanout
from tasks.forensics import assemble_forensic_kernel, detect, forensic_kglm, poison_data, train_poisoned


def forensic_sections(params: Params, stage: str) -> dict[str, Any]:
    """What a forensics task of ``stage`` reads (core/stage_reads.py); its data set is the poisoned one."""
    return stage_sections(params, stage, f"{params.poison.dataset}{POISONED_SUFFIX}")


@flow(name="forensics")
def forensics(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Poison a fraction of the training set, train on it, and find the poison again through each kernel.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    p = params.poison
    root = str(Path(outputs or params.outputs) / "forensics" / p.dataset)
    with Fanout(params.scale) as fan:
        data = fan.run(poison_data, sections=forensic_sections(params, "poison"), root=root).summary
        trained = fan.run(
            train_poisoned,
            sections=forensic_sections(params, "poison_train"),
            root=root,
            dataset_hash=data["dataset_hash"],
        ).summary
        logger.info(
            "poisoned model: clean test accuracy %.4f, attack success rate %.4f",
            trained["clean_test_accuracy"],
            trained["attack_success_rate"],
        )
        kernel_sections = forensic_sections(params, "poison_kernel")
        kernels = fan.map(
            assemble_forensic_kernel,
            [
                dict(sections=kernel_sections, root=root, kind=kind, checkpoint_hash=trained["checkpoint_hash"])
                for kind in p.kinds
            ],
        )
        faith = fan.map(
            forensic_kglm,
            [
                dict(
                    sections=forensic_sections(params, "forensic_kglm"),
                    root=root,
                    kind=kind,
                    checkpoint_hash=k.summary["checkpoint_hash"],
                )
                for kind, k in zip(p.kinds, kernels)
            ],
        )
        result = fan.run(
            detect, sections=forensic_sections(params, "detect_poison"), root=root, faith=[f.summary for f in faith]
        ).summary
    for row in result["rows"]:
        logger.info(
            "%s: precision %.4f recall %.4f trace-back %.4f",
            row["kernel"],
            row["precision"],
            row["recall"],
            row["trace_precision"],
        )
    run_id = None
    if track:
        run_id = track_forensics(
            params,
            result,
            checkpoint_hash=trained["checkpoint_hash"],
            extra_metrics={k: trained[k] for k in ("clean_test_accuracy", "attack_success_rate")},
        )
    run = fan.ledger
    found = {
        **result,
        "clean_test_accuracy": trained["clean_test_accuracy"],
        "attack_success_rate": trained["attack_success_rate"],
        "n_poisoned": data["n_poisoned"],
        "cache_hits": run.hits,
        "tasks": run.runs,
        "mlflow_run_id": run_id,
    }
    best = max(found["rows"], key=lambda row: (row["precision"] + row["recall"], row["kernel"]))
    publish_results(
        "forensics",
        p.dataset,
        [forensics_table(params, found)],
        {
            "poisoned training points": found["n_poisoned"],
            "attack success rate": found["attack_success_rate"],
            f"best detection ({best['kernel']}): precision": best["precision"],
            "recall": best["recall"],
        },
        experiment="forensics",
        run_ids={"forensics": run_id} if run_id else None,
    )
    return found
