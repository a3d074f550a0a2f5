"""MLflow logging: one run per (flow or stage) invocation, in a local SQLite store by default."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


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


def log_run(experiment: str, run_name: str, *, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str],
            artifacts: list[str | Path] = ()) -> str:
    """Log one finished run and return its id. NaN metrics are logged as NaN (MLflow shows them)."""
    import mlflow  # imported here: it is slow to import and only stages that log need it

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        _log_contents(params, metrics, {"git_commit": git_commit(), **tags}, artifacts)
        return run.info.run_id


def _log_contents(params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str], artifacts: list[str | Path]) -> None:
    """Params (flattened, values cut to MLflow's limit), metrics, tags and files of the active run."""
    import mlflow

    mlflow.log_params({key: str(value)[:500] for key, value in flatten("", params, {}).items()})
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
    mlflow.set_tags(tags)
    for artifact in artifacts:
        mlflow.log_artifact(str(artifact))


def log_parent_with_children(experiment: str, run_name: str, *, params: dict[str, Any], metrics: dict[str, float],
                             tags: dict[str, str], artifacts: list[str | Path], children: list[dict[str, Any]]) -> str:
    """One parent run (the aggregate) with a nested child run per member (e.g. per seed)."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as parent:
        _log_contents(params, metrics, {"git_commit": git_commit(), **tags}, artifacts)
        for child in children:
            with mlflow.start_run(run_name=child["name"], nested=True):
                _log_contents(child.get("params", {}), child["metrics"], {**tags, **child.get("tags", {})}, child.get("artifacts", []))
        return parent.info.run_id
