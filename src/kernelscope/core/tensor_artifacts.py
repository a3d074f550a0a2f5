"""safetensors artifacts: tensors by name with {provenance, sha256} in one header entry (see core.artifacts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.artifact_errors import fix_hint, mismatch_error, missing_error
from kernelscope.core.artifacts import (
    META_KEY,
    ContentDigest,
    canonical_json,
    check_expected,
    check_kind,
    full_meta,
    numpy_bytes,
)
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import atomic_path


def _tensor_digest(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    digest = ContentDigest(meta)
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        digest.update(name, f"{array.dtype.str}{array.shape}".encode() + b"\0" + numpy_bytes(array))
    return digest.hexdigest()


def write_safetensors(
    path: str | Path, tensors: Mapping[str, Any], artifact: str, provenance: Mapping[str, Any]
) -> dict[str, Any]:
    """numpy arrays or torch tensors by name, with provenance and content hash in the header, atomically."""
    from safetensors.numpy import save_file

    arrays = {name: _as_numpy(value) for name, value in tensors.items()}
    meta = full_meta(artifact, provenance)
    content = _tensor_digest(meta, arrays)
    # One metadata entry: safetensors writes its metadata map in no fixed order, and the same
    # artifact must always be the same bytes (a checkpoint's file hash is its identity).
    stamp = canonical_json({"provenance": meta, "sha256": content}).decode()
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={META_KEY: stamp})
    return {**meta, "content_sha256": content}


def _as_numpy(value: Any) -> np.ndarray:
    """A C-ordered numpy view or copy, keeping 0-d arrays 0-d
    (BatchNorm's num_batches_tracked; ascontiguousarray would make it (1,)).
    """
    array = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else np.asarray(value)
    return array if array.flags.c_contiguous else array.copy(order="C")


def read_safetensors(
    path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors (numpy) and provenance of a verified safetensors artifact (safetensors never runs code)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise missing_error(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {fix_hint(artifact)}.")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    except Exception as error:  # safetensors raises its own error types for a corrupt header or truncated data
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({error.__class__.__name__}); the file is torn or corrupt, "
            f"{fix_hint(artifact)}."
        ) from None
    try:
        stamp = json.loads(header[META_KEY])
        meta, stored = stamp["provenance"], stamp["sha256"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ArtifactError(
            f"{path}: carries no kernelscope provenance or content hash (an older or foreign file); "
            f"{fix_hint(artifact)}."
        ) from None
    meta = check_kind(path, meta, artifact)
    if _tensor_digest(meta, arrays) != stored:
        raise mismatch_error(path, artifact)
    check_expected(path, meta, expect, artifact)
    return arrays, meta
