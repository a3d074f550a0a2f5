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
from flows.job_record import write_job_summary
from flows.loss_kernel import loss_kernel, multitask
from flows.structure import structure
from flows.summary_tables import summary_tables
from flows.surrogate import attribution, explain_flow, faithfulness_table
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.param_sections import ScaleParams
from kernelscope.core.params import Params, load_params
from kernelscope.core.tables import SummaryTable
from kernelscope.core.tracking import tracking_uri
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
    start = time.perf_counter()
    with shared_dask_cluster(params.scale) as address:
        if address:
            console.print(f"Dask: one LocalCluster for every flow of the job at {address}")
        results = pipeline(params=params)
    tables = print_summary(console, params, results)
    path = write_job_summary(params, tables, results["elapsed"], time.perf_counter() - start, args.params)
    console.print(f"Every table as JSON: {path} (python infra/docs_results.py {path} writes docs/results.md)")
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


def rich_table(table: SummaryTable) -> Table:
    shown = Table(title=table.title)
    for i, column in enumerate(table.columns):
        shown.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        shown.add_row(*row)
    return shown


def print_summary(console: Console, params: Params, results: dict[str, Any]) -> list[SummaryTable]:
    """Every result table on the console, then where the outputs are; returns the tables."""
    tables = summary_tables(params, results)
    for table in tables:
        console.print(rich_table(table))
        for note in table.notes:
            console.print(note)
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
    return tables


if __name__ == "__main__":
    sys.exit(main())
