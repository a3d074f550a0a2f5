"""What each `kernelscope` subcommand does: read params, run the capability's stage, return the summary to print."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.params import Params


def run_layout(args: argparse.Namespace, params: Params):
    from kernelscope.core.layout import RunLayout
    from kernelscope.core.param_types import BUILTIN_DATASETS

    if args.dataset not in BUILTIN_DATASETS and args.dataset not in params.sources:
        raise KernelscopeError(
            f"--dataset {args.dataset!r} is neither a bundled dataset ({', '.join(BUILTIN_DATASETS)}) nor a key of "
            f"sources in {args.params}; add it under sources or fix the name."
        )
    return RunLayout.at(args.out, args.dataset)


def cmd_data(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.data.stages import data_stage

    return data_stage(params, args.dataset, run_layout(args, params)).summary


def cmd_train(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.models.stages import train_stage

    return train_stage(params, run_layout(args, params), progress=not args.quiet).summary


def cmd_kernel(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.kernels.stages import kernel_stage

    kinds = [args.kind] if args.kind else list(params.kernel.kinds)
    return [kernel_stage(params, run_layout(args, params), kind, progress=not args.quiet).summary for kind in kinds]


def cmd_kglm(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.surrogate.stages import (
        check_kglm_inputs,
        compare_stage,
        evaluate_stage,
        fit_kglm_stage,
        track_attribution,
    )

    layout = run_layout(args, params)
    for kind in params.kernel.kinds:
        check_kglm_inputs(params, layout, kind)
    summaries = []
    for kind in params.kernel.kinds:
        fit_kglm_stage(params, layout, kind)
        summaries.append(evaluate_stage(params, layout, kind).summary)
    comparison = compare_stage(params, layout, summaries).summary
    if not args.no_track:
        track_attribution(params, summaries, source=args.source, comparison_artifacts=comparison["artifacts"])
    return [
        {k: s[k] for k in ("dataset", "kind", "tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")}
        for s in summaries
    ]


def cmd_explain(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.data.datasets import read_dataset
    from kernelscope.kernels.registry import model_kinds
    from kernelscope.surrogate.explain import Query, explain, load_inputs

    layout = run_layout(args, params)
    kinds = args.kinds or list(params.kernel.kinds)
    unknown = [k for k in kinds if k not in model_kinds()]
    if unknown:
        raise KernelscopeError(f"--kinds {unknown[0]!r} is not a kernel kind; choose from {', '.join(model_kinds())}.")
    if (args.index is None) == (args.input is None):
        raise KernelscopeError(
            "explain: pass exactly one of --index N (a test point) or --input FILE (.npz or .parquet)."
        )
    ds = read_dataset(layout.data_dir)
    if not 1 <= args.top_k <= len(ds.train.y):
        raise KernelscopeError(
            f"--top-k {args.top_k} is out of range; give a number from 1 to {len(ds.train.y)} "
            f"(the training points of {ds.name})."
        )
    if args.index is not None:
        if not 0 <= args.index < len(ds.test.y):
            raise KernelscopeError(
                f"explain: --index {args.index} is out of range; the test set of {ds.name} has {len(ds.test.y)} points."
            )
        query = Query(f"test-{args.index}", ds.test.x[args.index], int(ds.test.y[args.index]), args.index)
    else:
        x = load_inputs(args.input, ds.train.x.shape[1])
        if len(x) != 1:
            raise KernelscopeError(
                f"{args.input}: holds {len(x)} inputs, and explain takes one; "
                "save the row to explain in a file of its own."
            )
        query = Query(Path(args.input).stem, x[0], None, None)
    result = explain(params, layout, kinds, query, args.top_k)
    if not args.no_track:
        from kernelscope.surrogate.explain import track_explain

        track_explain(params, ds.name, query.name, kinds, args.top_k, result, source=args.source)
    return {k: result[k] for k in ("query", "label", "nn_prediction", "nn_probabilities", "report")}


def cmd_report(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.surrogate.report import build_report

    result = build_report(args.run, args.table)
    if not args.no_track:
        from kernelscope.surrogate.report import track_report

        track_report(params, Path(args.run).name, result, source=args.source)
    return result


def cmd_forensics(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.layout import RunLayout
    from kernelscope.forensics import stages as fs

    layout = RunLayout(Path(args.out) / "forensics" / params.poison.dataset)
    kinds = [args.kind] if args.kind else list(params.poison.kinds)
    if args.step == "data":
        return fs.poison_stage(params, layout).summary
    if args.step == "train":
        return fs.poisoned_train_stage(params, layout).summary
    if args.step == "kernel":
        return [fs.forensic_kernel_stage(params, layout, kind).summary for kind in kinds]
    faith = [fs.forensic_kglm_stage(params, layout, kind).summary for kind in kinds]
    result = fs.detection_stage(params, layout, faith).summary
    from kernelscope.core.fileio import dvc_metrics, write_dvc_metrics

    keys = ("precision", "recall", "trace_precision", "trace_recall", "clean_tau_k", "poisoned_tau_k")
    metrics = dvc_metrics({r["kernel"]: {k: r[k] for k in keys} for r in result["rows"]})
    write_dvc_metrics(layout.root / "metrics.json", metrics)
    if not args.no_track:
        fs.track_forensics(params, result, checkpoint_hash=layout.checkpoint_hash(), source=args.source)
    return metrics


def cmd_loss_kernel(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.fileio import dvc_metrics, write_dvc_metrics
    from kernelscope.loss_kernel.stages import loss_kernel_stage, track_loss_kernel

    layout = run_layout(args, params)
    summary = loss_kernel_stage(params, layout, progress=not args.quiet).summary
    keys = ("llc", "label_agreement", "label_base_rate", "label_lift", "superclass_agreement", "taxonomic_lift")
    metrics = dvc_metrics({k: float(summary[k]) for k in keys if k in summary})
    write_dvc_metrics(layout.root / "loss_kernel_metrics.json", metrics)
    if not args.no_track:
        track_loss_kernel(params, args.dataset, summary, source=args.source)
    return {**metrics, "warnings": summary["warnings"]}


def cmd_counterfactual(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.fileio import write_dvc_metrics
    from kernelscope.counterfactual.stages import counterfactual_stage, track_counterfactual

    layout = run_layout(args, params)
    summary = counterfactual_stage(params, layout, progress=not args.quiet).summary
    metrics = {
        row["attributor"]: {k: row[k] for k in ("lds", "ci_low", "ci_high", "seconds")} for row in summary["lds"]
    }
    for row in summary.get("brittleness", []):
        metrics.setdefault(row["attributor"], {})[f"flipped_k{row['k']}"] = row["flipped"]
    for row in summary.get("mislabel", []):
        metrics[row["attributor"]].update({f"mislabel_{k}": row[k] for k in ("auc", "found_top10", "found_top20")})
    write_dvc_metrics(layout.root / "counterfactual_metrics.json", metrics)
    if not args.no_track:
        track_counterfactual(params, summary, source=args.source)
    return [{k: row[k] for k in ("attributor", "lds", "ci_low", "ci_high", "seconds")} for row in summary["lds"]]


def cmd_multitask(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.loss_kernel.multitask_stages import multitask_loss_stage, multitask_train_stage

    root = Path(args.out) / "multitask"
    stage = multitask_train_stage if args.step == "train" else multitask_loss_stage
    return {k: v for k, v in stage(params, root).summary.items() if k != "plots"}


def cmd_structure(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.fileio import write_dvc_metrics
    from kernelscope.core.param_types import BUILTIN_DATASETS
    from kernelscope.structure.stages import structure_stage
    from kernelscope.structure.summary import track_structure

    subjects = (*BUILTIN_DATASETS, *params.sources, "multitask")
    if args.subject not in subjects:
        raise KernelscopeError(
            f"--subject {args.subject!r} is not a model kernelscope knows; choose from {', '.join(subjects)} "
            f"(or add a source to {args.params})."
        )
    summary = structure_stage(params, args.subject, args.out).summary
    root = Path(args.out) / args.subject
    write_dvc_metrics(root / "structure_metrics.json", summary["metrics"])
    if not args.no_track:
        track_structure(params, summary, source=args.source)
    return {
        "subject": summary["subject"],
        "coordinate_free_kept": summary["coordinate_free_kept"],
        "parameters": summary["parameters"],
        "files": summary["files"],
    }


def cmd_runs(args: argparse.Namespace, params: Params) -> Any:
    """A comparison table of the newest MLflow runs (any path: Prefect UI, dvc repro, CLI), from MLflow's search API."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from kernelscope.core.tracking import DEFAULT_METRICS, EXPERIMENTS, TAG_COLUMNS, compare_runs, tracking_uri

    metrics = tuple(args.metrics.split(",")) if args.metrics else DEFAULT_METRICS
    try:
        columns, rows = compare_runs(
            tuple(args.experiment or EXPERIMENTS), args.filter or "", args.max_results, metrics
        )
    except Exception as error:  # MLflow raises its own exception types for a bad filter string
        raise KernelscopeError(
            f"runs: MLflow could not search {tracking_uri()} ({str(error).splitlines()[0]}); check --filter, "
            "e.g. --filter \"tags.dataset = 'digits10'\"."
        ) from None
    if args.json:
        return rows
    table = Table(title=f"kernelscope runs in {tracking_uri()} (newest first)")
    for column in ("experiment", "run", "started", *TAG_COLUMNS, *columns):
        table.add_column(
            column, justify="right" if column in columns else "left", no_wrap=column not in ("kernel", "run")
        )
    for row in rows:
        started = datetime.datetime.fromtimestamp(row["started"] / 1000).strftime("%m-%d %H:%M")
        tags = [row[t][:8] if t in ("git_commit", "params_hash") else row[t] for t in TAG_COLUMNS]
        values = [f"{row['metrics'][c]:.4g}" if c in row["metrics"] else "" for c in columns]
        table.add_row(row["experiment"], row["run"], started, *tags, *values)
    Console(width=max(Console().width, 200)).print(table if rows else "no runs found")
    return None
