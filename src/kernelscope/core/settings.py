"""Project-local defaults for Prefect, MLflow and DVC, applied before those tools are imported.

Anything already set in the environment wins, so a user can point at real servers.
"""

from __future__ import annotations

import os
from pathlib import Path


def apply_tool_defaults(project_root: str | Path | None = None) -> None:
    root = Path(project_root or os.getcwd()).resolve()
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",  # 20 s is tight on two busy cores
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        # Progress lines of long loops (kernelscope.core.progress) appear in the flow run's logs in the UI.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "kernelscope",
        # ... and outside a flow run (a kernel computed in a process that imported the flows) they stay local,
        # instead of a warning per line that the API handler has no flow run to send them to.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
