"""Prefect tasks: thin, cached wrappers over kernelscope's pipeline stages."""

from kernelscope.core.settings import apply_tool_defaults

apply_tool_defaults()
