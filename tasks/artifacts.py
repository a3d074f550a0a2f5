"""Results where Prefect users look: the Artifacts page of the Prefect UI.

Each flow run publishes its result tables as table artifacts and its headline numbers as a Markdown artifact,
under keys stable per (flow, dataset), so the UI keeps each one's history across runs. Long loops (training,
kernel rows, SGLD, retraining) show as progress artifacts of their task run. Outside a flow or task run
nothing is published: the library and the CLI run without Prefect.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from uuid import UUID

from kernelscope.core import progress
from kernelscope.core.tables import SummaryTable

LOGGER = logging.getLogger("kernelscope.artifacts")


def artifact_key(*parts: str) -> str:
    """Prefect allows lowercase letters, digits and dashes in an artifact key."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def _in_a_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_table(table: SummaryTable) -> str | None:
    """The table as a table artifact (one record per row, the column names as keys); returns its key."""
    if not _in_a_run():
        return None
    from prefect.artifacts import create_table_artifact

    key = artifact_key(table.key)
    records = [dict(zip(table.columns, row)) for row in table.rows]
    description = "\n\n".join([f"**{table.title}**", *table.notes])
    create_table_artifact(table=records, key=key, description=description)
    return key


def summary_markdown(flow: str, subject: str, headline: list[str], links: dict[str, str] | None = None) -> str:
    """What ran and its headline numbers, then where its report and MLflow runs are."""
    lines = [f"# {flow}: {subject}", "", *(f"- {line}" for line in headline)]
    if links:
        lines += ["", "## Where to look", "", *(f"- {name}: {target}" for name, target in links.items())]
    return "\n".join(lines) + "\n"


def publish_summary(flow: str, subject: str, markdown: str) -> str | None:
    """The run's summary as a Markdown artifact; returns its key."""
    if not _in_a_run():
        return None
    from prefect.artifacts import create_markdown_artifact

    key = artifact_key(flow, subject, "summary")
    create_markdown_artifact(markdown=markdown, key=key, description=f"{flow} on {subject}")
    return key


def report_link(path: str | Path) -> str:
    """A link a browser on this machine opens."""
    path = Path(path).resolve()
    return f"[{path.name}]({path.as_uri()})"


def mlflow_links(experiment: str, run_ids: dict[str, str]) -> dict[str, str]:
    """Links to MLflow runs when MLflow is served over HTTP (make ui), else how to open them."""
    from kernelscope.core.tracking import tracking_uri

    uri = tracking_uri()
    if not run_ids:
        return {}
    if not uri.startswith(("http://", "https://")):
        names = ", ".join(f"{name} `{run_id}`" for name, run_id in run_ids.items())
        return {"MLflow runs": f"{names} in `{uri}` (open them with `make mlflow-ui`)"}
    import mlflow

    experiment_id = mlflow.MlflowClient(uri).get_experiment_by_name(experiment).experiment_id
    base = uri.rstrip("/")
    return {
        f"MLflow run ({name})": f"[{run_id[:8]}]({base}/#/experiments/{experiment_id}/runs/{run_id})"
        for name, run_id in run_ids.items()
    }


class ProgressArtifacts:
    """A progress artifact per progress loop that runs inside a Prefect task run (core.progress listener)."""

    def __init__(self) -> None:
        self.ids: dict[int, UUID] = {}

    def __call__(self, bar: progress.Progress, ended: bool) -> None:
        from prefect.context import TaskRunContext

        if TaskRunContext.get() is None or bar.total <= 0:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * min(bar.done, bar.total) / bar.total
        try:
            if id(bar) not in self.ids:
                self.ids[id(bar)] = create_progress_artifact(percent, description=bar.desc)
            else:
                update_progress_artifact(self.ids[id(bar)], percent, description=bar.desc)
        except Exception as error:  # the UI's progress bar is never worth failing the computation for
            LOGGER.debug("progress artifact not updated: %s", error)
        if ended:
            self.ids.pop(id(bar), None)  # an id() is reused once its loop is gone


def install_progress_artifacts() -> None:
    """Progress loops in task runs show on the Prefect UI (set KERNELSCOPE_PROGRESS_ARTIFACTS=0 to turn off)."""
    if os.environ.get("KERNELSCOPE_PROGRESS_ARTIFACTS", "1") != "0" and not any(
        isinstance(listener, ProgressArtifacts) for listener in progress.LISTENERS
    ):
        progress.LISTENERS.append(ProgressArtifacts())


def headline(values: dict[str, Any]) -> list[str]:
    """``name: value`` lines, numbers to four significant digits."""
    return [
        f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}" for name, value in values.items()
    ]


def publish_results(
    flow: str,
    subject: str,
    tables: list[SummaryTable],
    values: dict[str, Any],
    *,
    report: str | Path | None = None,
    experiment: str | None = None,
    run_ids: dict[str, str] | None = None,
) -> list[str]:
    """A flow run's tables and its Markdown summary (headline ``values``, report, MLflow runs) on the Prefect UI,
    the same summary as the description of its MLflow runs; returns the artifact keys."""
    from kernelscope.core.tracking import describe_runs

    keys = [publish_table(table) for table in tables]
    links = {"HTML report": report_link(report)} if report else {}
    links.update(mlflow_links(experiment, run_ids or {}) if experiment else {})
    markdown = summary_markdown(flow, subject, headline(values), links)
    keys.append(publish_summary(flow, subject, markdown))
    describe_runs([run_id for run_id in (run_ids or {}).values() if run_id], markdown)
    return [key for key in keys if key]
