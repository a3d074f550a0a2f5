"""The main job's record: every table it printed and the seconds of each flow, as a verified JSON artifact
(infra/docs_results.py turns it into docs/results.md)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

from kernelscope.core.json_artifacts import read_json_artifact, write_json_artifact
from kernelscope.core.params import Params
from kernelscope.core.tables import SummaryTable

JOB_SUMMARY = "main-job.json"  # under params.outputs: every table of the last main job, with its timings
JOB_SUMMARY_ARTIFACT = "main-job-summary"


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_job_summary(
    params: Params, tables: list[SummaryTable], elapsed: dict[str, float], seconds: float, params_file: str
) -> Path:
    """The main job's tables and timings as a verified JSON artifact (infra/docs_results.py reads it)."""
    from kernelscope.core.tracking import git_commit

    path = Path(params.outputs) / JOB_SUMMARY
    payload = {
        "tables": [table.to_dict() for table in tables],
        "elapsed": [[name, seconds] for name, seconds in elapsed.items()],  # a list: the JSON's keys are sorted
        "seconds": seconds,
        "params_file": params_file,
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
    }
    write_json_artifact(path, payload, JOB_SUMMARY_ARTIFACT)
    return path


def read_job_summary(path: str | Path) -> tuple[list[SummaryTable], dict[str, Any]]:
    """(the tables, the rest of the payload) of a main job's summary, its content hash checked."""
    payload = read_json_artifact(path, JOB_SUMMARY_ARTIFACT)
    return [SummaryTable.from_dict(t) for t in payload.pop("tables")], payload
