"""Prefect tasks: thin, cached wrappers over kernelscope's pipeline stages."""

from kernelscope.settings import apply_tool_defaults

apply_tool_defaults()
