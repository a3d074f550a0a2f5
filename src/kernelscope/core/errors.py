"""User-facing errors: one sentence naming the file, the field and the fix."""

from __future__ import annotations


class KernelscopeError(Exception):
    """A mistake in input or configuration that the user can fix (printed without a traceback)."""


class CheckpointError(KernelscopeError):
    """A checkpoint is missing, corrupt or does not match what was asked for."""


class ArtifactError(KernelscopeError):
    """A stored artifact (dataset, kernel) is missing, corrupt or has mismatched provenance."""


class ParamsError(KernelscopeError):
    """params.yaml (or a flow parameter) has a missing or invalid field."""
