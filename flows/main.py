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
    table = Table(title="kernelscope · attribution (NTK surrogate faithfulness)")
    for column in ("dataset", "kernel", "NN test acc", "kGLM test acc", "TAD (pts)", "τ_K", "R_Miss", "cache hits", "time"):
        table.add_column(column, justify="right" if column not in ("dataset", "kernel") else "left")
    for dataset in params.datasets:
        console.print(f"[bold]attribution[/bold] flow on {dataset} ...")
        start = time.perf_counter()
        result = attribution(dataset=dataset, params_path=args.params)
        elapsed = time.perf_counter() - start
        for s in result["summaries"]:
            table.add_row(dataset, s["kind"], _fmt(100 * s["nn_accuracy"], ".2f"), _fmt(100 * s["kglm_accuracy"], ".2f"),
                          _fmt(s["tad"], "+.2f"), _fmt(s["tau_k"], ".3f"), _fmt(s["r_miss"], ".3f"),
                          f"{result['cache_hits']}/{result['tasks']}", f"{elapsed:.1f}s")
    console.print(table)
    console.print("τ_K: Kendall tau-b between NN and kGLM correct-class probabilities on the test set; "
                  "R_Miss n/a: neither model misclassified anything.")
    console.print(f"MLflow: experiment 'attribution' in {tracking_uri()}\n"
                  "  browse with: make mlflow-ui   (then open http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
