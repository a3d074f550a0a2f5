"""MLflow logging: one run per (flow or stage) invocation, in a local SQLite store by default."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


# Schemes MLflow logs to without plugins (SQLAlchemy dialects may carry a driver: postgresql+psycopg2).
_MLFLOW_SCHEMES = (
    "",
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)


def check_tracking_uri() -> str:
    """The tracking URI, after cheap checks that MLflow can log there (no import of mlflow, no connection).

    Run before a stage writes anything, so a bad MLFLOW_TRACKING_URI fails the command at once
    instead of after the stage's outputs are written. Raises KernelscopeError naming the variable.
    """
    from importlib.metadata import entry_points
    from urllib.parse import urlparse

    from kernelscope.core.errors import KernelscopeError

    uri = tracking_uri()
    what = (
        f"MLFLOW_TRACKING_URI is {uri!r}"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else f"MLFLOW_TRACKING_URI is unset, so runs go to {uri!r}"
    )
    fix = "point MLFLOW_TRACKING_URI at sqlite:////abs/path/mlflow.db or http://host:port, or pass --no-track"
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower().split("+")[0]
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    if scheme not in _MLFLOW_SCHEMES and scheme not in {e.name for e in entry_points(group="mlflow.tracking_store")}:
        raise KernelscopeError(f"{what}, and MLflow has no tracking store for scheme {scheme!r}; {fix}.")
    if scheme in ("http", "https") and not parsed.netloc:
        raise KernelscopeError(f"{what}, which names no host; {fix}.")
    if scheme in ("sqlite", "file", ""):
        if scheme == "sqlite":
            local = uri.partition("?")[0][len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
            if not local:
                raise KernelscopeError(f"{what}, which names no database file; {fix}.")
        else:
            local = parsed.path if scheme == "file" else uri
        target = Path(local)
        if target.exists():
            usable = (target.is_file() if scheme == "sqlite" else target.is_dir()) and os.access(target, os.W_OK)
            if not usable:
                kind = "database file" if scheme == "sqlite" else "folder"
                raise KernelscopeError(f"{what}, but {target} is not a writable {kind}; {fix}.")
        elif scheme == "sqlite" and not (target.parent.is_dir() and os.access(target.parent, os.W_OK)):
            raise KernelscopeError(
                f"{what}, but the folder {target.parent} does not exist or is not writable; create it, or {fix}."
            )
    return uri


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value
    return out


def run_source() -> str:
    """Where this run was started: 'prefect-deployment' (the UI's Run button or a schedule), 'dvc'
    (a ``dvc repro`` stage), 'prefect' (a flow called from Python, e.g. the main job) or 'cli'."""
    if os.environ.get("PREFECT__FLOW_RUN_ID"):  # set by Prefect in the process that runs a deployment's flow run
        return "prefect-deployment"
    if os.environ.get("DVC_STAGE"):  # set by DVC for every stage command
        return "dvc"
    if "prefect" in sys.modules:  # never import Prefect from the library; ask only if a flow already did
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is not None:
            return "prefect"
    return "cli"


@dataclass(frozen=True)
class RunTags:
    """The tags every kernelscope run carries, so the MLflow UI can filter and compare runs from
    the Prefect UI, ``dvc repro`` and the CLI side by side. ``kernel`` may list several kinds."""

    flow: str
    dataset: str
    kernel: str
    seed: int
    params_hash: str
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self, source: str | None = None) -> dict[str, str]:
        tags = {
            "flow": self.flow,
            "dataset": self.dataset,
            "kernel": self.kernel,
            "seed": str(self.seed),
            "params_hash": self.params_hash,
            "git_commit": git_commit(),
            "source": source or run_source(),
        }
        if os.environ.get("DVC_STAGE"):
            tags["dvc_stage"] = os.environ["DVC_STAGE"]
        return {**tags, **{k: str(v) for k, v in self.extra.items()}}


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite tracking store while logging to it.

    Two processes that open a new SQLite store at once both run MLflow's schema migration (one
    fails: "index ... already exists"), and two that create one experiment at once collide on its
    unique name; serializing the (short) logging step across processes prevents both.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///") :] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _experiment(experiment: str) -> Iterator[Any]:
    """mlflow, pointed at this project's store and the experiment, under the store lock."""
    import mlflow  # imported here: it is slow to import and only stages that log need it

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _store_lock():
        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(experiment)
        yield mlflow


def log_run(
    experiment: str,
    run_name: str,
    *,
    tags: RunTags,
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: list[str | Path] = (),
    source: str | None = None,
) -> str:
    """Log one finished run and return its id. NaN metrics are logged as NaN (MLflow shows them)."""
    with _experiment(experiment) as mlflow, mlflow.start_run(run_name=run_name) as run:
        _log_contents(params, metrics, tags.as_dict(source), artifacts)
        return run.info.run_id


def _log_contents(
    params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str], artifacts: list[str | Path]
) -> None:
    """Params (flattened, values cut to MLflow's limit), metrics, tags and files of the active run."""
    import mlflow

    mlflow.log_params({key: str(value)[:500] for key, value in flatten("", params, {}).items()})
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
    mlflow.set_tags(tags)
    for artifact in artifacts:
        mlflow.log_artifact(str(artifact))


def describe_runs(run_ids: list[str], markdown: str) -> None:
    """The Markdown description MLflow shows at the top of each run's page (its tag ``mlflow.note.content``)."""
    import mlflow

    with _store_lock():
        client = mlflow.MlflowClient(tracking_uri())
        for run_id in run_ids:
            client.set_tag(run_id, "mlflow.note.content", markdown)


def log_parent_with_children(
    experiment: str,
    run_name: str,
    *,
    tags: RunTags,
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: list[str | Path],
    children: list[dict[str, Any]],
) -> str:
    """One parent run (the aggregate) with a nested child run per member (e.g. per seed; a child's
    ``tags`` override the parent's, e.g. its own seed and dataset)."""
    parent_tags = tags.as_dict()
    with _experiment(experiment) as mlflow, mlflow.start_run(run_name=run_name) as parent:
        _log_contents(params, metrics, parent_tags, artifacts)
        for child in children:
            with mlflow.start_run(run_name=child["name"], nested=True):
                _log_contents(
                    child.get("params", {}),
                    child["metrics"],
                    {**parent_tags, **child.get("tags", {})},
                    child.get("artifacts", []),
                )
        return parent.info.run_id


EXPERIMENTS = (
    "attribution",
    "faithfulness-table",
    "forensics",
    "loss-kernel",
    "loss-kernel-sweep",
    "explain",
    "structure",
)
TAG_COLUMNS = ("flow", "source", "dataset", "kernel", "seed", "params_hash", "git_commit")
DEFAULT_METRICS = ("tau_k", "tad", "r_miss", "kglm_accuracy", "precision.trntk", "recall.trntk", "llc", "task_auc")


def compare_runs(
    experiments: tuple[str, ...] = EXPERIMENTS,
    filter_string: str = "",
    max_results: int = 20,
    metric_patterns: tuple[str, ...] = DEFAULT_METRICS,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Newest runs of the given experiments through MLflow's search API, as rows of tags and metrics.

    Returns (metric columns present in any row, rows); an unknown experiment name is skipped.
    """
    import fnmatch

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    found = [e for e in (client.get_experiment_by_name(name) for name in experiments) if e is not None]
    if not found:
        return [], []
    names = {e.experiment_id: e.name for e in found}
    runs = client.search_runs(
        [e.experiment_id for e in found],
        filter_string=filter_string,
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    rows, columns = [], []
    for run in runs:
        metrics = {k: v for k, v in run.data.metrics.items() if any(fnmatch.fnmatchcase(k, p) for p in metric_patterns)}
        columns += [k for k in metrics if k not in columns]
        rows.append(
            {
                "experiment": names[run.info.experiment_id],
                "run": run.info.run_name,
                "run_id": run.info.run_id,
                "started": run.info.start_time,
                **{t: run.data.tags.get(t, "") for t in TAG_COLUMNS},
                "metrics": metrics,
            }
        )
    return columns, rows
