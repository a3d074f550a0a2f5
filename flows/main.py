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
    console.print("τ_K: Kendall tau-b between NN and kGLM correct-class probabilities on the test set; "
                  "TAD: kGLM minus NN test accuracy; R_Miss n/a: neither model misclassified anything.")
    console.print(f"Comparison tables, bar charts and residual plots: {params.outputs}/<dataset>/comparison/")
    console.print(f"MLflow: experiment 'attribution' in {tracking_uri()}\n"
                  "  browse with: make mlflow-ui   (then open http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
