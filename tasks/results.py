"""Cached task results on disk: plain JSON only, checked before Prefect parses them.

A Prefect result record names its own serializer, and Prefect builds that serializer from the file:
a record saying ``{"type": "pickle", "picklelib": "<any module>"}`` would import that module and
unpickle the payload, so anyone able to write ``.prefect/`` could run code through a cache hit.
kernelscope's tasks therefore persist with ``ResultJSON`` (JSON with tagged numpy arrays, non-finite
floats and StageResults, decoded without any object hook that imports), and every read of a file under
the results folder is refused unless the record says exactly that serializer and no storage block.

The check sits on ``LocalFileSystem``'s two read methods, the only way Prefect reads a record of a
``pathlib.Path`` result storage (Prefect refuses an unsaved storage block of our own in ``@task``);
files outside the results folder are read unchanged.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer
from pydantic import Field

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.results import Output, StageResult

SERIALIZER = "kernelscope-json"
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: the only array dtypes a result may hold


def encode(value: Any) -> Any:
    """A JSON-able copy of a task result that decodes back to the same types and values."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in NUMERIC_KINDS:
            raise TypeError(f"task results hold numeric arrays only, not dtype {value.dtype}")
        data = np.ascontiguousarray(value)
        return {
            "__ndarray__": data.dtype.str,
            "shape": list(data.shape),
            "data": base64.b64encode(data.tobytes()).decode(),
        }
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, StageResult):
        outputs = [[o.path, o.sha256] for o in value.outputs]
        return {"__stage_result__": {"outputs": outputs, "summary": encode(value.summary)}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(
        f"a kernelscope task result cannot hold a {type(value).__name__}; return plain values, lists, "
        "dicts, arrays or a StageResult"
    )


def _decode_object(obj: dict[str, Any]) -> Any:
    if "__float__" in obj:
        return float(obj["__float__"])  # 'nan', 'inf', '-inf' only parse as floats
    if "__ndarray__" in obj:
        dtype = np.dtype(obj["__ndarray__"])
        if dtype.kind not in NUMERIC_KINDS:
            raise ValueError(f"cached result holds an array of dtype {dtype}")
        return np.frombuffer(base64.b64decode(obj["data"]), dtype=dtype).reshape(obj["shape"]).copy()
    if "__tuple__" in obj:
        return tuple(obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(k): v for k, v in obj["__items__"]}
    if "__stage_result__" in obj:
        return _stage_result(obj["__stage_result__"])
    return obj


def _stage_result(fields: Any) -> StageResult:
    """A StageResult from its decoded fields (its summary is decoded already: the hook runs innermost first)."""
    outputs, summary = (fields.get("outputs"), fields.get("summary")) if isinstance(fields, dict) else (None, None)
    pairs_ok = isinstance(outputs, list) and all(
        isinstance(o, list) and len(o) == 2 and all(isinstance(v, str) for v in o) for o in outputs
    )
    if not (pairs_ok and isinstance(summary, dict)):
        raise ValueError("cached result holds a malformed StageResult (outputs: [path, sha256] pairs; summary: a dict)")
    return StageResult(tuple(Output(path, sha256) for path, sha256 in outputs), summary)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


class ResultJSON(Serializer):
    """Plain JSON for task results; decoding builds only numbers, strings, lists, dicts, tuples, numeric arrays
    and StageResults (kernelscope.core.results: files with their hashes, and a summary of the same plain values)."""

    type: str = Field(default=SERIALIZER, frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(encode(obj), allow_nan=False, separators=(",", ":")).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob, object_hook=_decode_object)


def check_record(path: Path, content: bytes) -> bytes:
    """The bytes of a result record, if it is one of kernelscope's; else one sentence and no parsing by Prefect."""
    try:
        record = json.loads(content)
        metadata = record["metadata"]
        ours = metadata.get("serializer") == {"type": SERIALIZER} and metadata.get("storage_block_id") is None
    except (ValueError, KeyError, TypeError, AttributeError):
        ours = False
    if not ours:
        raise KernelscopeError(
            f"{path}: this cached task result is not a kernelscope JSON record (it names another serializer or "
            "storage, which Prefect would import and run); nothing was read, delete the file (or the whole "
            "kernelscope-results folder) to clear the cache."
        )
    return content


_RESULT_FOLDERS: set[Path] = set()


def _guarded(block: LocalFileSystem, path: str, content: bytes) -> bytes:
    resolved = Path(block._resolve_path(path)).resolve()
    if any(folder == resolved.parent or folder in resolved.parents for folder in _RESULT_FOLDERS):
        return check_record(resolved, content)
    return content


def guard(folder: Path) -> Path:
    """Check every record read from ``folder`` (install the read check once per process); returns the folder."""
    if not _RESULT_FOLDERS:
        sync_read, async_read = LocalFileSystem.read_path, LocalFileSystem.aread_path

        async def aread_path(self: LocalFileSystem, path: str) -> bytes:
            return _guarded(self, path, await async_read(self, path))

        def read_path(self: LocalFileSystem, path: str, _sync: bool | None = None) -> bytes:
            if _sync is False:  # an async caller: hand back the awaitable read
                return aread_path(self, path)  # type: ignore[return-value]
            return _guarded(self, path, sync_read(self, path, _sync=True))

        LocalFileSystem.aread_path = aread_path  # type: ignore[method-assign]
        LocalFileSystem.read_path = read_path  # type: ignore[method-assign]
    _RESULT_FOLDERS.add(Path(folder).resolve())
    return folder
