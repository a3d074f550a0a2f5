"""JSON artifacts: a payload with a top-level ``kernelscope`` stamp {artifact, format, version, sha256}
(see core.artifacts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernelscope import __version__
from kernelscope.core.artifacts import (
    FORMAT,
    META_KEY,
    canonical_json,
    check_expected,
    check_kind,
    fix_hint,
    mismatch_error,
    missing_error,
)
from kernelscope.core.errors import ArtifactError


def write_json_artifact(path: str | Path, payload: Mapping[str, Any], artifact: str) -> dict[str, Any]:
    """A JSON payload (non-finite numbers as null) with ``kernelscope: {artifact, format, version, sha256}``."""
    from kernelscope.core.fileio import write_text_atomic

    body = json.loads(canonical_json({k: v for k, v in payload.items() if k != META_KEY}))
    stamp = {"artifact": artifact, "format": FORMAT, "kernelscope_version": __version__}
    stamp["sha256"] = hashlib.sha256(canonical_json({**body, META_KEY: stamp})).hexdigest()
    write_text_atomic(path, json.dumps({**body, META_KEY: stamp}, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return body


def read_json_artifact(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The verified payload of a JSON artifact (without its stamp)."""
    path = Path(path)
    if not path.exists():
        raise missing_error(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {fix_hint(artifact)}.")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error.__class__.__name__}); {fix_hint(artifact)}.") from None
    stamp = raw.get(META_KEY) if isinstance(raw, dict) else None
    if not isinstance(stamp, dict) or "sha256" not in stamp:
        raise ArtifactError(
            f"{path}: carries no kernelscope content hash (an older or foreign file); {fix_hint(artifact)}."
        )
    check_kind(path, stamp, artifact)
    body = {k: v for k, v in raw.items() if k != META_KEY}
    unstamped = {k: v for k, v in stamp.items() if k != "sha256"}
    if hashlib.sha256(canonical_json({**body, META_KEY: unstamped})).hexdigest() != stamp["sha256"]:
        raise mismatch_error(path, artifact)
    check_expected(path, body, expect, artifact)
    return body


def write_table_json(path: str | Path, header: list[str], rows: list[list[str]]) -> Path:
    """A table as shown to people (header and text cells), as a JSON artifact beside its CSV and Markdown."""
    write_json_artifact(path, {"header": list(header), "rows": [list(r) for r in rows]}, "table")
    return Path(path)


def read_table_json(path: str | Path) -> tuple[list[str], list[list[str]]]:
    table = read_json_artifact(path, "table")
    return [str(c) for c in table.get("header", [])], [[str(c) for c in row] for row in table.get("rows", [])]


def _refuse_constant(name: str) -> float:
    """JSON has no NaN or Infinity; a file holding them was not written by kernelscope."""
    raise ValueError(f"non-JSON constant {name}")
