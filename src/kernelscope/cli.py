"""`kernelscope` command line: one subcommand per DVC stage, each reading params.yaml."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from pathlib import Path

from kernelscope.commands import (
    cmd_counterfactual,
    cmd_data,
    cmd_explain,
    cmd_forensics,
    cmd_kernel,
    cmd_kglm,
    cmd_loss_kernel,
    cmd_multitask,
    cmd_report,
    cmd_runs,
    cmd_structure,
    cmd_train,
)
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.fileio import json_safe
from kernelscope.core.params import load_params


def _common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument(
        "--out", default="outputs/dvc", help="root folder of the run's artifacts (default: outputs/dvc)"
    )
    if dataset:
        parser.add_argument(
            "--dataset", required=True, help="dataset to work on: digits2, digits10 or a key of sources in params.yaml"
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelscope", description="Explain a trained classifier through kernels between data points."
    )
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
            p.add_argument(
                "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
            )
    p = sub.add_parser(
        "explain",
        help="explain one test point or a new input through every kernel's surrogate",
        description="Predictions, most similar and highest-attribution training points, box plot and image grid.",
    )
    _common(p)
    p.add_argument("--index", type=int, help="index of a test point of the run")
    p.add_argument("--input", help="a new input: .npz (array 'x') or .parquet (column 'features')")
    p.add_argument("--kinds", nargs="*", help="kernels to explain with (default: every kind in params.yaml)")
    p.add_argument("--top-k", type=int, default=5, help="training points listed per kernel and logit (default: 5)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser(
        "forensics",
        help="BadNets forensics: poison the data, train, kernels, detect and trace back",
        description="One step of the forensics pipeline (the paper's Table 3); outputs under OUT/forensics/<dataset>.",
    )
    p.add_argument("step", choices=["data", "train", "kernel", "detect"], help="which step to run")
    _common(p, dataset=False)
    p.add_argument("--kind", default=None, help="one kernel kind instead of every kind in poison.kinds")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_forensics)
    p = sub.add_parser(
        "loss-kernel",
        help="SGLD around the run's model; loss covariance and correlation kernels",
        description="Per-sample losses of every train and test point across SGLD draws; kinds loss_cov and loss_corr.",
    )
    _common(p)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_loss_kernel)
    p = sub.add_parser(
        "counterfactual",
        help="are the attributions right? retrain on subsets and score every attributor by its LDS",
        description="Retrain counterfactual.m models on seeded subsets, compute every attributor's scores and write "
        "OUT/<dataset>/counterfactual/ (lds.csv, lds.md, plots, scores/*.parquet). Needs the run's train, "
        "kernel and kglm stages (for kglm:<kind> and kernel:<kind>).",
    )
    _common(p)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_counterfactual)
    p = sub.add_parser(
        "multitask",
        help="the loss kernel's multitask validation: train the modular model, or sample and score it",
        description="Modular addition and division (p = multitask.p) in one model; outputs under OUT/multitask.",
    )
    p.add_argument("step", choices=["train", "loss-kernel"], help="which step to run")
    _common(p, dataset=False)
    p.set_defaults(func=cmd_multitask)
    p = sub.add_parser(
        "structure",
        help="layer-Jacobian spectra, degeneracy, interaction basis and the coordinate check of a model",
        description="Structure probes of a dataset's model (OUT/<dataset>) or the modular model (OUT/multitask).",
    )
    p.add_argument(
        "--subject",
        required=True,
        help="which model to probe: a dataset's (digits2, digits10, a source) or 'multitask'",
    )
    _common(p, dataset=False)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_structure)
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML page for a run folder",
        description="Tables and every figure of a run, images embedded; logged to MLflow.",
    )
    p.add_argument("run", help="run folder, e.g. outputs/flows/digits10")
    p.add_argument("--table", default=None, help="folder of a multi-seed table to include (e.g. outputs/flows/table)")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--source", default=None, help="source tag recorded in MLflow (default: dvc under dvc repro, else cli)"
    )
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "runs",
        help="compare MLflow runs side by side (tags and metrics)",
        description=(
            "The newest runs of every kernelscope experiment, whichever path started them, from MLflow's search API."
        ),
    )
    p.add_argument(
        "--experiment",
        action="append",
        help="experiment to include (repeatable; default: every kernelscope experiment)",
    )
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
        raise KernelscopeError(
            f"--out {out}: is on a kernel file system ({', '.join(VIRTUAL_ROOTS)}), which cannot hold artifacts; "
            "choose a folder on disk."
        )
    if path.exists() and not path.is_dir():
        raise KernelscopeError(
            f"--out {out}: is a file, not a folder; choose a folder for the run's artifacts or move the file away."
        )


def _blocking_file(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (or ``path`` itself): the file that stands where a folder must be."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _os_error_sentence(error: OSError, args: argparse.Namespace) -> str | None:
    """One sentence for a file-system failure the user can fix (no space, read-only, permissions, a file where a folder
    goes), naming the path; None for any other OSError, which is a bug and keeps its traceback."""
    where = (
        error.filename2 or error.filename or getattr(args, "out", None) or "a file"
    )  # os.replace(tmp, target): name the target
    elsewhere = "choose another --out" if hasattr(args, "out") else "choose another location"
    if error.errno == errno.ENOTDIR:
        return (
            f"{_blocking_file(Path(str(where)))}: is a file where a folder of {where} must be; "
            f"move it away or {elsewhere}."
        )
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
