"""The main job: every flow on its embedded default, then a summary table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow
from rich.console import Console
from rich.table import Table

import flows  # noqa: F401  (applies the project-local tool defaults)
from flows.counterfactual import counterfactual
from flows.forensics import forensics
from flows.loss_kernel import loss_kernel, multitask
from flows.structure import structure
from flows.summary_tables import fmt, print_counterfactual, print_structure
from flows.surrogate import attribution, explain_flow, faithfulness_table
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.param_sections import ScaleParams
from kernelscope.core.params import Params, load_params
from kernelscope.core.tracking import tracking_uri
from kernelscope.surrogate.table import METRICS
from tasks.fanout import DASK_ADDRESS_ENV, dask_address, local_cluster_kwargs


@contextmanager
def timed(elapsed: dict[str, float], name: str) -> Iterator[None]:
    """Seconds of the block under ``name`` (the main job prints them: it is meant to finish while you watch)."""
    start = time.perf_counter()
    yield
    elapsed[name] = time.perf_counter() - start


@flow(name="kernelscope-pipeline")
def pipeline(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Every flow of the platform in order: attribution per dataset, the multi-seed table, forensics,
    counterfactual evaluation (LDS) per dataset, the loss kernel per dataset and its multitask validation,
    structure probes per model, then an explanation and a report per dataset.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    from kernelscope.surrogate.report import build_report, track_report

    out = outputs or params.outputs
    results: dict[str, Any] = {
        "attribution": {},
        "loss_kernel": {},
        "structure": {},
        "counterfactual": {},
        "explain": {},
        "report": {},
        "elapsed": {},
    }
    elapsed = results["elapsed"]
    for dataset in params.datasets:
        with timed(elapsed, f"attribution-{dataset}"):
            results["attribution"][dataset] = attribution(params=params, dataset=dataset, outputs=out, track=track)
    with timed(elapsed, "table"):
        results["table"] = faithfulness_table(params=params, outputs=out, track=track)
    with timed(elapsed, "forensics"):
        results["forensics"] = forensics(params=params, outputs=out, track=track)
    with timed(elapsed, "counterfactual"):
        for dataset in params.datasets:
            results["counterfactual"][dataset] = counterfactual(
                params=params, dataset=dataset, outputs=out, track=track
            )
    with timed(elapsed, "loss-kernel"):
        for dataset in params.datasets:
            results["loss_kernel"][dataset] = loss_kernel(params=params, dataset=dataset, outputs=out, track=track)
    with timed(elapsed, "multitask"):
        results["multitask"] = multitask(params=params, outputs=out, track=track)
    with timed(elapsed, "structure"):
        for subject in params.structure.subjects:
            if subject == "multitask" or subject in params.datasets:  # a digits model exists only for those run
                results["structure"][subject] = structure(params=params, subject=subject, outputs=out, track=track)
    with timed(elapsed, "explain-and-report"):
        for dataset in params.datasets:
            results["explain"][dataset] = explain_flow(
                params=params, dataset=dataset, index=0, outputs=out, track=track
            )
            report = build_report(f"{out}/{dataset}", f"{out}/table")
            if track:
                track_report(params, dataset, report)
            results["report"][dataset] = report
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every kernelscope flow on the defaults in params.yaml.")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))  # keep the table on one line in logs and CI
    try:
        params = load_params(args.params)
    except KernelscopeError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    console.print(
        f"[bold]kernelscope-pipeline[/bold] flow: every flow on {args.params} (runner: {params.scale.runner}) ..."
    )
    with shared_dask_cluster(params.scale) as address:
        if address:
            console.print(f"Dask: one LocalCluster for every flow of the job at {address}")
        results = pipeline(params=params)
    print_summary(console, params, results)
    return 0


@contextmanager
def shared_dask_cluster(scale: ScaleParams) -> Iterator[str | None]:
    """With runner 'dask' and no cluster named, one LocalCluster serves every flow of the job (each flow
    would otherwise start and stop its own, re-importing torch in every worker): its address is set in
    KERNELSCOPE_DASK_ADDRESS while the job runs. Yields the address, or None when nothing was started."""
    if scale.runner != "dask" or dask_address(scale):
        yield None
        return
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_kwargs(scale)) as cluster:
        os.environ[DASK_ADDRESS_ENV] = cluster.scheduler_address
        try:
            yield cluster.scheduler_address
        finally:
            os.environ.pop(DASK_ADDRESS_ENV, None)


def print_summary(console: Console, params: Params, results: dict[str, Any]) -> None:
    for dataset in params.datasets:
        result = results["attribution"][dataset]
        first = result["summaries"][0]
        table = Table(
            title=f"{dataset}: kernel comparison — NN test accuracy {100 * first['nn_accuracy']:.2f}%, "
            f"{results['elapsed'][f'attribution-{dataset}']:.1f} s, "
            f"{result['cache_hits']}/{result['tasks']} tasks from cache"
        )
        for column in ("kernel", "kGLM test acc", "TAD (pts)", "τ_K", "R_Miss"):
            table.add_column(column, justify="left" if column == "kernel" else "right")
        for s in result["summaries"]:
            table.add_row(
                s["kind"],
                fmt(100 * s["kglm_accuracy"], ".2f"),
                fmt(s["tad"], "+.2f"),
                fmt(s["tau_k"], ".3f"),
                fmt(s["r_miss"], ".3f"),
            )
        console.print(table)

    seeds = results["table"]
    summary = Table(
        title=f"Multi-seed faithfulness ({params.table.kind}, {params.table.n_models} seeds × "
        f"{list(params.table.archs)}, mean(SE) over seeds; {results['elapsed']['table']:.0f} s). "
        "Paper (MNIST2): MLP τ_K 0.708(3), CNN τ_K 0.857(7)"
    )
    for column in ("model (dataset)", "# models", *(label for _, label, _, _ in METRICS)):
        summary.add_column(column, justify="left" if column == "model (dataset)" else "right")
    for row in seeds["table"]:
        summary.add_row(
            f"{row['arch'].upper()} ({row['dataset']})",
            str(row["n_models"]),
            *(row[key]["text"] for key, _, _, _ in METRICS),
        )
    console.print(summary)

    p, found = params.poison, results["forensics"]
    table3 = Table(
        title=f"Forensics ({p.dataset}, {found['n_poisoned']} poisoned training points; clean test accuracy "
        f"{100 * found['clean_test_accuracy']:.2f}%, attack success {100 * found['attack_success_rate']:.2f}%; "
        f"{results['elapsed']['forensics']:.0f} s). Flag: ≥{p.m} of the {p.k} nearest training points poisoned"
    )
    for column in ("kernel", "precision", "recall", "τ_K", "poi. τ_K", "trace-back P=R"):
        table3.add_column(column, justify="left" if column == "kernel" else "right")
    for row in found["rows"]:
        table3.add_row(
            row["kernel"],
            fmt(100 * row["precision"], ".2f"),
            fmt(100 * row["recall"], ".2f"),
            fmt(row["clean_tau_k"], ".3f"),
            fmt(row["poisoned_tau_k"], ".3f"),
            fmt(100 * row["trace_precision"], ".2f"),
        )
    console.print(table3)

    lk_table = Table(
        title="Loss kernel (SGLD around each dataset's MLP; "
        "kGLM on loss kernels uses the test labels through the losses)"
    )
    for column in (
        "dataset",
        "LLC λ̂",
        "label agreement@10",
        "base rate",
        "lift",
        "taxonomic lift",
        "kGLM acc (loss_corr)",
        "warnings",
    ):
        lk_table.add_column(column, justify="left" if column == "dataset" else "right")
    for dataset in params.datasets:
        lk = results["loss_kernel"][dataset]
        s = lk["summary"]
        lk_table.add_row(
            dataset,
            f"{s['llc']:.3f}",
            f"{s['label_agreement']:.3f}",
            f"{s['label_base_rate']:.3f}",
            f"{s['label_lift']:.2f}",
            fmt(s.get("taxonomic_lift", float("nan")), ".2f"),
            fmt(100 * lk["kglm"]["loss_corr"]["kglm_accuracy"], ".2f"),
            str(len(s["warnings"])),
        )
    console.print(lk_table)
    mt = results["multitask"]
    acc, ms = mt["accuracy"], mt["summary"]
    console.print(
        f"Multitask (modular addition and division, p = {params.multitask.p}): "
        f"test accuracy add {100 * acc['test_add']:.1f}%, div {100 * acc['test_div']:.1f}%; "
        f"task separation ROC-AUC {ms['task_auc']:.3f} (within-chain {ms['task_auc_within_chain']:.3f}; "
        f"the paper: 0.931); division a = 0 probes: {ms['n_trivial_probes']}, mutual loss correlation "
        f"{ms.get('trivial_within_corr', float('nan')):.2f} vs "
        f"{ms.get('trivial_to_others_corr', float('nan')):.2f} to the rest; SGLD at ε "
        f"{ms.get('epsilon', params.multitask.epsilon):g}, {len(ms['warnings'])} health warning(s)"
    )
    for warning in ms["warnings"]:
        console.print(f"  SGLD health: {warning}")
    print_structure(console, results["structure"], results["elapsed"]["structure"])
    print_counterfactual(console, params, results["counterfactual"], results["elapsed"]["counterfactual"])
    for dataset in params.datasets:
        explained, report = results["explain"][dataset], results["report"][dataset]
        console.print(
            f"{dataset}: test point 0 (label {explained['label']}) explained in {explained['report']}; "
            f"report with {len(report['figures'])} figures: {report['path']}"
        )
    console.print(
        "τ_K: Kendall tau-b between NN and kGLM correct-class probabilities on the test set; "
        "TAD: kGLM minus NN test accuracy; R_Miss n/a: neither model misclassified anything."
    )
    console.print(f"Comparison tables, bar charts and residual plots: {params.outputs}/<dataset>/comparison/")
    console.print(
        f"Seconds per flow ({sum(results['elapsed'].values()):.0f} s in all): "
        + ", ".join(f"{name} {seconds:.0f}" for name, seconds in results["elapsed"].items())
    )
    console.print(
        "MLflow: experiments 'attribution', 'faithfulness-table', 'forensics', 'counterfactual', 'loss-kernel', "
        "'structure' "
        f"and 'explain' in {tracking_uri()}\n"
        "  compare runs: kernelscope runs   |   browse: make ui (Prefect and MLflow UIs on 127.0.0.1)"
    )


if __name__ == "__main__":
    sys.exit(main())
