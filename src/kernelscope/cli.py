"""`kernelscope` command line: one subcommand per DVC stage, each reading params.yaml."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.fileio import json_safe
from kernelscope.core.params import Params, load_params


def _common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--out", default="outputs/dvc", help="root folder of the run's artifacts (default: outputs/dvc)")
    if dataset:
        parser.add_argument("--dataset", required=True, help="dataset to work on: digits2, digits10 or a key of sources in params.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _layout(args: argparse.Namespace, params: Params):
    from kernelscope.core.param_types import BUILTIN_DATASETS
    from kernelscope.core.layout import RunLayout

    if args.dataset not in BUILTIN_DATASETS and args.dataset not in params.sources:
        raise KernelscopeError(f"--dataset {args.dataset!r} is neither a bundled dataset ({', '.join(BUILTIN_DATASETS)}) nor a key of "
                               f"sources in {args.params}; add it under sources or fix the name.")
    return RunLayout.at(args.out, args.dataset)


def cmd_data(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.data.stages import data_stage

    return data_stage(params, args.dataset, _layout(args, params)).summary


def cmd_train(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.models.stages import train_stage

    return train_stage(params, _layout(args, params), progress=not args.quiet).summary


def cmd_kernel(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.kernels.stages import kernel_stage

    kinds = [args.kind] if args.kind else list(params.kernel.kinds)
    return [kernel_stage(params, _layout(args, params), kind, progress=not args.quiet).summary for kind in kinds]


def cmd_kglm(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.surrogate.stages import check_kglm_inputs, compare_stage, evaluate_stage, fit_kglm_stage, track_attribution

    layout = _layout(args, params)
    for kind in params.kernel.kinds:
        check_kglm_inputs(params, layout, kind)
    summaries = []
    for kind in params.kernel.kinds:
        fit_kglm_stage(params, layout, kind)
        summaries.append(evaluate_stage(params, layout, kind).summary)
    comparison = compare_stage(params, layout, summaries).summary
    if not args.no_track:
        track_attribution(params, summaries, source=args.source, comparison_artifacts=comparison["artifacts"])
    return [{k: s[k] for k in ("dataset", "kind", "tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")} for s in summaries]


def cmd_explain(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.data.datasets import read_dataset
    from kernelscope.surrogate.explain import Query, explain, load_inputs
    from kernelscope.kernels.registry import model_kinds

    layout = _layout(args, params)
    kinds = args.kinds or list(params.kernel.kinds)
    unknown = [k for k in kinds if k not in model_kinds()]
    if unknown:
        raise KernelscopeError(f"--kinds {unknown[0]!r} is not a kernel kind; choose from {', '.join(model_kinds())}.")
    if (args.index is None) == (args.input is None):
        raise KernelscopeError("explain: pass exactly one of --index N (a test point) or --input FILE (.npz or .parquet).")
    ds = read_dataset(layout.data_dir)
    if not 1 <= args.top_k <= len(ds.train.y):
        raise KernelscopeError(f"--top-k {args.top_k} is out of range; give a number from 1 to {len(ds.train.y)} "
                               f"(the training points of {ds.name}).")
    if args.index is not None:
        if not 0 <= args.index < len(ds.test.y):
            raise KernelscopeError(f"explain: --index {args.index} is out of range; the test set of {ds.name} has {len(ds.test.y)} points.")
        query = Query(f"test-{args.index}", ds.test.x[args.index], int(ds.test.y[args.index]), args.index)
    else:
        x = load_inputs(args.input, ds.train.x.shape[1])
        if len(x) != 1:
            raise KernelscopeError(f"{args.input}: holds {len(x)} inputs, and explain takes one; save the row to explain in a file of its own.")
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
    from kernelscope.forensics import stages as fs
    from kernelscope.core.layout import RunLayout

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
    from kernelscope.core.fileio import write_json_atomic

    keys = ("precision", "recall", "trace_precision", "trace_recall", "clean_tau_k", "poisoned_tau_k")
    metrics = {r["kernel"]: {k: (None if r[k] != r[k] else round(float(r[k]), 6)) for k in keys} for r in result["rows"]}
    write_json_atomic(layout.root / "metrics.json", metrics)
    if not args.no_track:
        fs.track_forensics(params, result, checkpoint_hash=layout.checkpoint_hash(), source=args.source)
    return metrics


def cmd_loss_kernel(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.fileio import write_json_atomic
    from kernelscope.loss_kernel.stages import loss_kernel_stage, track_loss_kernel

    layout = _layout(args, params)
    summary = loss_kernel_stage(params, layout, progress=not args.quiet).summary
    keys = ("llc", "label_agreement", "label_base_rate", "label_lift", "superclass_agreement", "taxonomic_lift")
    metrics = {k: round(float(summary[k]), 6) for k in keys if k in summary}
    write_json_atomic(layout.root / "loss_kernel_metrics.json", metrics)
    if not args.no_track:
        track_loss_kernel(params, args.dataset, summary, source=args.source)
    return {**metrics, "warnings": summary["warnings"]}


def cmd_multitask(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.loss_kernel.multitask_stages import multitask_loss_stage, multitask_train_stage

    root = Path(args.out) / "multitask"
    if args.step == "train":
        return multitask_train_stage(params, root).summary
    summary = multitask_loss_stage(params, root).summary
    return {k: v for k, v in summary.items() if k != "plots"}


def cmd_structure(args: argparse.Namespace, params: Params) -> Any:
    from kernelscope.core.fileio import write_json_atomic
    from kernelscope.structure.stages import structure_stage, track_structure

    from kernelscope.core.param_types import BUILTIN_DATASETS

    subjects = (*BUILTIN_DATASETS, *params.sources, "multitask")
    if args.subject not in subjects:
        raise KernelscopeError(f"--subject {args.subject!r} is not a model kernelscope knows; choose from {', '.join(subjects)} "
                               f"(or add a source to {args.params}).")
    summary = structure_stage(params, args.subject, args.out).summary
    root = Path(args.out) / args.subject
    write_json_atomic(root / "structure_metrics.json", {k: round(v, 6) for k, v in sorted(summary["metrics"].items())})
    if not args.no_track:
        track_structure(params, summary, source=args.source)
    return {"subject": summary["subject"], "coordinate_free_kept": summary["coordinate_free_kept"], "parameters": summary["parameters"],
            "files": summary["files"]}


def cmd_runs(args: argparse.Namespace, params: Params) -> Any:
    """A comparison table of the newest MLflow runs (any path: Prefect UI, dvc repro, CLI), from MLflow's search API."""
    import datetime

    from rich.console import Console
    from rich.table import Table

    from kernelscope.core.tracking import DEFAULT_METRICS, EXPERIMENTS, TAG_COLUMNS, compare_runs, tracking_uri

    metrics = tuple(args.metrics.split(",")) if args.metrics else DEFAULT_METRICS
    try:
        columns, rows = compare_runs(tuple(args.experiment or EXPERIMENTS), args.filter or "", args.max_results, metrics)
    except Exception as error:  # MLflow raises its own exception types for a bad filter string
        raise KernelscopeError(f"runs: MLflow could not search {tracking_uri()} ({str(error).splitlines()[0]}); check --filter, "
                               "e.g. --filter \"tags.dataset = 'digits10'\".") from None
    if args.json:
        return rows
    table = Table(title=f"kernelscope runs in {tracking_uri()} (newest first)")
    for column in ("experiment", "run", "started", *TAG_COLUMNS, *columns):
        table.add_column(column, justify="right" if column in columns else "left", no_wrap=column not in ("kernel", "run"))
    for row in rows:
        started = datetime.datetime.fromtimestamp(row["started"] / 1000).strftime("%m-%d %H:%M")
        tags = [row[t][:8] if t in ("git_commit", "params_hash") else row[t] for t in TAG_COLUMNS]
        values = [f"{row['metrics'][c]:.4g}" if c in row["metrics"] else "" for c in columns]
        table.add_row(row["experiment"], row["run"], started, *tags, *values)
    Console(width=max(Console().width, 200)).print(table if rows else "no runs found")
    return None


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
            p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p = sub.add_parser("explain", help="explain one test point or a new input through every kernel's surrogate",
                       description="Predictions, most similar and highest-attribution training points, box plot and image grid.")
    _common(p)
    p.add_argument("--index", type=int, help="index of a test point of the run")
    p.add_argument("--input", help="a new input: .npz (array 'x') or .parquet (column 'features')")
    p.add_argument("--kinds", nargs="*", help="kernels to explain with (default: every kind in params.yaml)")
    p.add_argument("--top-k", type=int, default=5, help="training points listed per kernel and logit (default: 5)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("forensics", help="BadNets forensics: poison the data, train, kernels, detect and trace back",
                       description="One step of the forensics pipeline (the paper's Table 3); outputs under OUT/forensics/<dataset>.")
    p.add_argument("step", choices=["data", "train", "kernel", "detect"], help="which step to run")
    _common(p, dataset=False)
    p.add_argument("--kind", default=None, help="one kernel kind instead of every kind in poison.kinds")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p.set_defaults(func=cmd_forensics)
    p = sub.add_parser("loss-kernel", help="SGLD around the run's model; loss covariance and correlation kernels",
                       description="Per-sample losses of every train and test point across SGLD draws; kinds loss_cov and loss_corr.")
    _common(p)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p.set_defaults(func=cmd_loss_kernel)
    p = sub.add_parser("multitask", help="the loss kernel's multitask validation: train the modular model, or sample and score it",
                       description="Modular addition and division (p = multitask.p) in one model; outputs under OUT/multitask.")
    p.add_argument("step", choices=["train", "loss-kernel"], help="which step to run")
    _common(p, dataset=False)
    p.set_defaults(func=cmd_multitask)
    p = sub.add_parser("structure", help="layer-Jacobian spectra, degeneracy, interaction basis and the coordinate check of a model",
                       description="Structure probes of a dataset's model (OUT/<dataset>) or the modular model (OUT/multitask).")
    p.add_argument("--subject", required=True, help="which model to probe: a dataset's (digits2, digits10, a source) or 'multitask'")
    _common(p, dataset=False)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p.set_defaults(func=cmd_structure)
    p = sub.add_parser("report", help="write one self-contained HTML page for a run folder",
                       description="Tables and every figure of a run, images embedded; logged to MLflow.")
    p.add_argument("run", help="run folder, e.g. outputs/flows/digits10")
    p.add_argument("--table", default=None, help="folder of a multi-seed table to include (e.g. outputs/flows/table)")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("runs", help="compare MLflow runs side by side (tags and metrics)",
                       description="The newest runs of every kernelscope experiment, whichever path started them, from MLflow's search API.")
    p.add_argument("--experiment", action="append", help="experiment to include (repeatable; default: every kernelscope experiment)")
    p.add_argument("--filter", help="MLflow filter string, e.g. \"tags.dataset = 'digits10' and metrics.tau_k > 0.6\"")
    p.add_argument("--metrics", help="comma-separated metric names or patterns to show (default: the headline metrics)")
    p.add_argument("--max-results", type=int, default=20, help="runs to show (default: 20)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.set_defaults(func=cmd_runs)
    return parser


def _tracks(args: argparse.Namespace) -> bool:
    """Whether this command logs to (or reads) MLflow."""
    if args.command == "runs":
        return True
    if args.command == "forensics" and args.step != "detect":
        return False
    return hasattr(args, "no_track") and not args.no_track


VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # kernel file systems: writing artifacts there fails or does something else


def _check_out(out: str) -> None:
    """Refuse an --out that can never hold a run's artifacts, before any stage starts."""
    path = Path(out).resolve()
    if any(path == Path(root) or Path(root) in path.parents for root in VIRTUAL_ROOTS):
        raise KernelscopeError(f"--out {out}: is on a kernel file system ({', '.join(VIRTUAL_ROOTS)}), which cannot hold artifacts; "
                               "choose a folder on disk.")
    if path.exists() and not path.is_dir():
        raise KernelscopeError(f"--out {out}: is a file, not a folder; choose a folder for the run's artifacts or move the file away.")


def _blocking_file(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (or ``path`` itself): the file that stands where a folder must be."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _os_error_sentence(error: OSError, args: argparse.Namespace) -> str | None:
    """One sentence for a file-system failure the user can fix (no space, read-only, permissions, a file where a folder
    goes), naming the path; None for any other OSError, which is a bug and keeps its traceback."""
    where = error.filename2 or error.filename or getattr(args, "out", None) or "a file"  # os.replace(tmp, target): name the target
    elsewhere = "choose another --out" if hasattr(args, "out") else "choose another location"
    if error.errno == errno.ENOTDIR:
        return f"{_blocking_file(Path(str(where)))}: is a file where a folder of {where} must be; move it away or {elsewhere}."
    sentences = {
        errno.ENOSPC: f"{where}: no space left on the device; free some space or {elsewhere}.",
        errno.EDQUOT: f"{where}: disk quota exceeded; free some space or {elsewhere}.",
        errno.EROFS: f"{where}: the file system is read-only; {elsewhere} on a writable disk.",
        errno.EACCES: f"{where}: permission denied; {elsewhere} that you can write to, or fix its permissions.",
        errno.EPERM: f"{where}: operation not permitted; {elsewhere} that you can write to, or fix its permissions.",
        errno.EISDIR: f"{where}: is a folder where a file must be; move it away or {elsewhere}.",
        errno.EEXIST: f"{where}: exists and is not a folder; move it away or {elsewhere}.",
        errno.ENOENT: f"{where}: no such file or folder; check the path (or run the stage that writes it first).",
    }
    return sentences.get(error.errno)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        if hasattr(args, "out"):
            _check_out(args.out)
        if _tracks(args):
            from kernelscope.core.tracking import check_tracking_uri

            check_tracking_uri()  # before the stage writes anything, not after
        result = args.func(args, params)
    except KernelscopeError as error:
        print(f"kernelscope {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        sentence = _os_error_sentence(error, args)
        if sentence is None:
            raise
        print(f"kernelscope {args.command}: error: {sentence}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(json_safe(result), indent=2, default=str, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
