"""Prefect tasks: thin, cached wrappers over kernelscope's pipeline stages."""

from kernelscope.core.settings import apply_tool_defaults
from tasks.artifacts import install_progress_artifacts

apply_tool_defaults()
install_progress_artifacts()  # long loops inside task runs show as progress bars on the Prefect UI
