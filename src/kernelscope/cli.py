"""`kernelscope` command line: one subcommand per DVC stage, each reading params.yaml."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from kernelscope.errors import KernelscopeError
from kernelscope.params import Params, load_params


def _common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--out", default="outputs/dvc", help="root folder of the run's artifacts (default: outputs/dvc)")
    if dataset:
        parser.add_argument("--dataset", required=True, choices=["digits2", "digits10"], help="dataset to work on")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _layout(args: argparse.Namespace):
    from kernelscope.pipeline import RunLayout

    return RunLayout.at(args.out, args.dataset)


def cmd_data(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.pipeline import data_stage

    return data_stage(params, args.dataset, _layout(args))


def cmd_train(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.pipeline import train_stage

    return train_stage(params, _layout(args), progress=not args.quiet)


def cmd_kernel(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.pipeline import kernel_stage

    kinds = [args.kind] if args.kind else list(params.kernel.kinds)
    return [kernel_stage(params, _layout(args), kind, progress=not args.quiet) for kind in kinds]


def cmd_kglm(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.pipeline import compare_stage, evaluate_stage, fit_kglm_stage, track_attribution

    layout = _layout(args)
    summaries = []
    for kind in params.kernel.kinds:
        fit_kglm_stage(params, layout, kind)
        summaries.append(evaluate_stage(layout, kind))
    comparison = compare_stage(layout, summaries)
    if not args.no_track:
        track_attribution(params, summaries, source=args.source, comparison_artifacts=comparison["artifacts"])
    return [{k: s[k] for k in ("dataset", "kind", "tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")} for s in summaries]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kernelscope", description="Explain a trained classifier through kernels between data points.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: list[tuple[str, str, Callable]] = [
        ("data", "write the seeded, stratified train/test split as Parquet", cmd_data),
        ("train", "train the model and write a safetensors checkpoint with its JSON sidecar", cmd_train),
        ("kernel", "compute the train × train and test × train kernels (Parquet)", cmd_kernel),
        ("kglm", "fit the kernel GLM surrogate, evaluate faithfulness, log to MLflow", cmd_kglm),
    ]
    for name, help_text, func in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(func=func)
        if name == "kernel":
            p.add_argument("--kind", default=None, help="one kernel kind instead of every kind in params.yaml")
        if name == "kglm":
            p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
            p.add_argument("--source", default="cli", help="tag recorded in MLflow for where the run came from (default: cli)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        result = args.func(args, params)
    except KernelscopeError as error:
        print(f"kernelscope {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
