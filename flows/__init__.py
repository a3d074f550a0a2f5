"""Prefect flows of kernelscope, composed of the tasks in tasks/."""

from kernelscope.core.settings import apply_tool_defaults

apply_tool_defaults()
