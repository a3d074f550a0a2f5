"""The counterfactual flow: are the attributions right? Retrain on subsets, score every attributor, LDS."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.summary_tables import counterfactual_table
from kernelscope.core.fileio import sha256_bytes, sha256_file
from kernelscope.core.layout import RunLayout
from kernelscope.core.param_types import DatasetName
from kernelscope.core.params import Params
from kernelscope.core.stage_reads import stage_sections
from tasks.artifacts import publish_results
from tasks.counterfactual import (
    attribute,
    brittleness,
    brittleness_plan,
    brittleness_stack,
    lds_table,
    mislabel,
    retrain_block,
)
from tasks.fanout import Fanout


def attributor_inputs_hash(layout: RunLayout, name: str) -> str:
    """The checkpoint's hash and the hashes of the files the attributor reads: an attribute task's key."""
    from kernelscope.counterfactual.attributors import attributor_inputs

    files = attributor_inputs(layout, name)
    parts = [layout.checkpoint_hash(), *(sha256_file(path) if path.exists() else "missing" for path in files)]
    return sha256_bytes(*(part.encode() for part in parts))


@flow(name="counterfactual")
def counterfactual(
    params: Params, dataset: DatasetName = "digits10", outputs: str | None = None, track: bool = True
) -> dict[str, Any]:
    """Retrain counterfactual.m models on seeded subsets (one task per block of stacked models), score every
    attributor (one task each, with its time and peak memory) and rank them by LDS with 95% intervals; then
    brittleness and mislabel detection (counterfactual.brittleness_queries, .mislabel_fraction). Run the
    attribution flow on the dataset first (its model, kernels and kGLMs are read).

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        dataset: the attribution run to evaluate.
        outputs: folder holding the runs; empty: params.outputs.
        track: log one MLflow run per attributor to the 'counterfactual' experiment.
    """
    from kernelscope.core.provenance import run_data
    from kernelscope.counterfactual.datamodels import block_count
    from kernelscope.counterfactual.stages import check_attributors, track_counterfactual

    logger = get_run_logger()
    check_attributors(params)
    layout = RunLayout.at(outputs or params.outputs, dataset)
    sections = stage_sections(params, "counterfactual_tasks", dataset)
    dataset_hash = run_data(params, layout).dataset_hash
    root = str(layout.root)
    with Fanout(params.scale) as fan:
        blocks = [
            fan.submit(retrain_block, sections=sections, root=root, block=b, dataset_hash=dataset_hash)
            for b in range(block_count(params))
        ]
        scored = [
            fan.submit(
                attribute, sections=sections, root=root, name=name, inputs_hash=attributor_inputs_hash(layout, name)
            )
            for name in params.counterfactual.attributors
        ]
        flips = None
        if params.counterfactual.mislabel_fraction:
            flips = fan.submit(mislabel, sections=sections, root=root, checkpoint_hash=layout.checkpoint_hash())
        for pending in blocks:
            fan.result(pending)
        score_files = [o.sha256 for pending in scored for o in fan.result(pending).outputs]
        summary = fan.run(lds_table, sections=sections, root=root).summary
        if params.counterfactual.brittleness_queries:
            scores_hash = sha256_bytes(*(digest.encode() for digest in score_files))
            plan = fan.run(brittleness_plan, sections=sections, root=root).summary["stacks"]  # [[k, stacks], ...]
            stacks = [
                fan.submit(brittleness_stack, sections=sections, root=root, k=k, stack=b, scores_hash=scores_hash)
                for k, count in plan
                for b in range(count)
            ]  # side by side, beside mislabel detection's retraining
            for pending in stacks:
                fan.result(pending)
            summary["brittleness_stacks"] = len(stacks)
            summary.update(fan.run(brittleness, sections=sections, root=root, scores_hash=scores_hash).summary)
        if flips is not None:
            summary.update(fan.result(flips).summary)
        hits, runs = fan.ledger.hits, fan.ledger.runs
    for row in summary["lds"]:
        logger.info(
            "%s %s: LDS %.3f [%.3f, %.3f], %.2f s",
            dataset,
            row["attributor"],
            row["lds"],
            row["ci_low"],
            row["ci_high"],
            row["seconds"],
        )
    run_ids = track_counterfactual(params, summary) if track else []
    best = max(summary["lds"], key=lambda row: row["lds"])
    publish_results(
        "counterfactual",
        dataset,
        [counterfactual_table(params, dataset, summary)],
        {f"highest LDS ({best['attributor']})": best["lds"], "retrained models": params.counterfactual.m},
        experiment="counterfactual",
        run_ids=dict(zip([row["attributor"] for row in summary["lds"]], run_ids)),  # track_counterfactual's order
    )
    return {**summary, "mlflow_run_ids": run_ids, "cache_hits": hits, "tasks": runs}
