"""The main job: every flow on its embedded default, then a summary table."""

from __future__ import annotations

import argparse
import math
import sys
import time

from rich.console import Console
from rich.table import Table

import flows  # noqa: F401  (applies the project-local tool defaults)
from flows.attribution import attribution
from flows.explain import explain_flow
from flows.forensics import forensics
from flows.loss_kernel import loss_kernel, multitask
from flows.table import faithfulness_table
from kernelscope.table import METRICS
from kernelscope.errors import KernelscopeError
from kernelscope.params import load_params
from kernelscope.tracking import tracking_uri


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


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
    tables = []
    for dataset in params.datasets:
        console.print(f"[bold]attribution[/bold] flow on {dataset} ...")
        start = time.perf_counter()
        result = attribution(dataset=dataset, params_path=args.params)
        elapsed = time.perf_counter() - start
        first = result["summaries"][0]
        table = Table(title=f"{dataset}: kernel comparison — NN test accuracy {100 * first['nn_accuracy']:.2f}%, "
                            f"{elapsed:.1f} s, {result['cache_hits']}/{result['tasks']} tasks from cache")
        for column in ("kernel", "kGLM test acc", "TAD (pts)", "τ_K", "R_Miss"):
            table.add_column(column, justify="left" if column == "kernel" else "right")
        for s in result["summaries"]:
            table.add_row(s["kind"], _fmt(100 * s["kglm_accuracy"], ".2f"), _fmt(s["tad"], "+.2f"), _fmt(s["tau_k"], ".3f"),
                          _fmt(s["r_miss"], ".3f"))
        tables.append(table)
    for table in tables:
        console.print(table)

    console.print(f"[bold]faithfulness-table[/bold] flow: {params.table.n_models} seeds × {list(params.table.archs)} × {list(params.datasets)} ...")
    start = time.perf_counter()
    seeds = faithfulness_table(params_path=args.params)
    summary = Table(title=f"Multi-seed faithfulness ({params.table.kind}, mean(SE) over seeds; {time.perf_counter() - start:.0f} s). "
                          "Paper (MNIST2): MLP τ_K 0.708(3), CNN τ_K 0.857(7)")
    for column in ("model (dataset)", "# models", *(label for _, label, _, _ in METRICS)):
        summary.add_column(column, justify="left" if column == "model (dataset)" else "right")
    for row in seeds["table"]:
        summary.add_row(f"{row['arch'].upper()} ({row['dataset']})", str(row["n_models"]), *(row[key]["text"] for key, _, _, _ in METRICS))
    console.print(summary)

    p = params.poison
    console.print(f"[bold]forensics[/bold] flow: BadNets on {p.dataset}, {p.fraction:.0%} poisoned, target {p.target} ...")
    start = time.perf_counter()
    found = forensics(params_path=args.params)
    table3 = Table(title=f"Forensics ({p.dataset}, {found['n_poisoned']} poisoned training points; clean test accuracy "
                         f"{100 * found['clean_test_accuracy']:.2f}%, attack success {100 * found['attack_success_rate']:.2f}%; "
                         f"{time.perf_counter() - start:.0f} s). Flag: ≥{p.m} of the {p.k} nearest training points poisoned")
    for column in ("kernel", "precision", "recall", "τ_K", "poi. τ_K", "trace-back P=R"):
        table3.add_column(column, justify="left" if column == "kernel" else "right")
    for row in found["rows"]:
        table3.add_row(row["kernel"], _fmt(100 * row["precision"], ".2f"), _fmt(100 * row["recall"], ".2f"), _fmt(row["clean_tau_k"], ".3f"),
                       _fmt(row["poisoned_tau_k"], ".3f"), _fmt(100 * row["trace_precision"], ".2f"))
    console.print(table3)

    lk_table = Table(title="Loss kernel (SGLD around each dataset's MLP; kGLM on loss kernels uses the test labels through the losses)")
    for column in ("dataset", "LLC λ̂", "label agreement@10", "base rate", "lift", "taxonomic lift", "kGLM acc (loss_corr)", "warnings"):
        lk_table.add_column(column, justify="left" if column == "dataset" else "right")
    for dataset in params.datasets:
        lk = loss_kernel(dataset=dataset, params_path=args.params)
        s = lk["summary"]
        lk_table.add_row(dataset, f"{s['llc']:.3f}", f"{s['label_agreement']:.3f}", f"{s['label_base_rate']:.3f}", f"{s['label_lift']:.2f}",
                         _fmt(s.get("taxonomic_lift", float("nan")), ".2f"),
                         _fmt(100 * lk["kglm"]["loss_corr"]["kglm_accuracy"], ".2f"), str(len(s["warnings"])))
    console.print(lk_table)
    console.print(f"[bold]loss-kernel-multitask[/bold] flow: modular addition and division, p = {params.multitask.p} ...")
    mt = multitask(params_path=args.params)
    acc, ms = mt["accuracy"], mt["summary"]
    console.print(f"  model test accuracy: add {100 * acc['test_add']:.1f}%, div {100 * acc['test_div']:.1f}%; "
                  f"task separation ROC-AUC {ms['task_auc']:.3f} (within-chain {ms['task_auc_within_chain']:.3f}; the paper: 0.931); "
                  f"division a = 0 probes: {ms['n_trivial_probes']}, mutual loss correlation "
                  f"{ms.get('trivial_within_corr', float('nan')):.2f} vs {ms.get('trivial_to_others_corr', float('nan')):.2f} to the rest")

    from kernelscope.report import build_report
    from kernelscope.tracking import log_run

    for dataset in params.datasets:
        explained = explain_flow(dataset=dataset, index=0, params_path=args.params)
        report = build_report(f"{params.outputs}/{dataset}", f"{params.outputs}/table")
        log_run("attribution", f"{dataset}-report", params={"dataset": dataset}, metrics={"figures": len(report["figures"])},
                tags={"flow": "report", "source": "prefect", "dataset": dataset}, artifacts=[report["path"]])
        console.print(f"{dataset}: test point 0 (label {explained['label']}) explained in {explained['report']}; "
                      f"report with {len(report['figures'])} figures: {report['path']}")
    console.print("τ_K: Kendall tau-b between NN and kGLM correct-class probabilities on the test set; "
                  "TAD: kGLM minus NN test accuracy; R_Miss n/a: neither model misclassified anything.")
    console.print(f"Comparison tables, bar charts and residual plots: {params.outputs}/<dataset>/comparison/")
    console.print(f"MLflow: experiments 'attribution', 'faithfulness-table', 'forensics', 'loss-kernel' and 'explain' in {tracking_uri()}\n"
                  "  browse with: make mlflow-ui   (then open http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
