"""The one artifact format: every Parquet, safetensors and JSON file that a stage writes and a later
stage reads carries its provenance and a content hash over its values *and* that provenance.

Every read recomputes the hash before any value is used, then checks the provenance fields the
reading stage expects (``expect``), so an edited value, an edited metadata field, a file of another
run or a file of another kind is refused with one sentence naming the file, the field and the fix.

The hash is chunk-invariant: each column (or tensor) has its own running digest over its canonical
little-endian bytes, so the same values give the same hash however they were cut into row groups.
It detects corruption and edits; it is not a signature (whoever can write the folder can recompute
it), which is why no artifact ever decides which code runs: models are built from params.

Layout on disk:
- Parquet: footer key-value metadata ``kernelscope`` (canonical JSON of the provenance, including
  ``artifact``, the kind of file) and ``kernelscope_sha256``.
- safetensors: one header metadata entry ``kernelscope`` holding {provenance, sha256}.
- JSON: the payload plus a top-level ``kernelscope`` object {artifact, sha256}.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kernelscope import __version__
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import atomic_path, json_safe

META_KEY = "kernelscope"
HASH_KEY = "kernelscope_sha256"
FORMAT = "kernelscope-artifact/1"

# What writes each kind of artifact: the fix named when one is missing, corrupt or from another run.
WRITERS = {
    "dataset-split": ("the data stage", "kernelscope data"),
    "kernel": ("the kernel stage", "kernelscope kernel"),
    "attributions": ("the kglm stage", "kernelscope kglm"),
    "kglm": ("the kglm stage", "kernelscope kglm"),
    "checkpoint-weights": ("the train stage", "kernelscope train"),
    "checkpoint-sidecar": ("the train stage", "kernelscope train"),
    "probe-losses": ("the loss-kernel stage", "kernelscope loss-kernel"),
    "loss-kernel-summary": ("the loss-kernel stage", "kernelscope loss-kernel"),
    "jacobian-spectra": ("the structure stage", "kernelscope structure"),
    "metrics": ("the kglm stage", "kernelscope kglm"),
    "explanation": ("the explain step", "kernelscope explain"),
    "table": ("the stage that writes the table", "kernelscope kglm, or the faithfulness-table flow"),
}


def canonical_json(payload: Any) -> bytes:
    """Sorted keys, no spaces, no NaN: the same payload always gives the same bytes."""
    return json.dumps(json_safe(payload), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _fix(artifact: str) -> str:
    stage, command = WRITERS.get(artifact, ("the stage that writes it", "see dvc.yaml"))
    return f"rerun {stage} ({command})"


def _missing(path: Path, artifact: str) -> ArtifactError:
    stage, command = WRITERS.get(artifact, ("the stage that writes it", "see dvc.yaml"))
    return ArtifactError(f"{path}: {artifact} file not found; run {stage} first ({command}).")


class ContentDigest:
    """sha256 over the provenance and, per named column or tensor, its values in order."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = canonical_json(meta)
        self._parts: dict[str, Any] = {}

    def update(self, name: str, data: bytes) -> None:
        self._parts.setdefault(name, hashlib.sha256()).update(data)

    def hexdigest(self) -> str:
        total = hashlib.sha256(self._meta)
        for name in sorted(self._parts):
            total.update(name.encode() + b"\0" + self._parts[name].digest())
        return total.hexdigest()


def _numpy_bytes(values: np.ndarray) -> bytes:
    """Canonical bytes of a numeric array: little-endian, C order."""
    values = np.ascontiguousarray(values)
    if values.dtype.byteorder == ">":
        values = values.astype(values.dtype.newbyteorder("<"))
    return values.tobytes()


def _arrow_bytes(array: pa.Array) -> Iterator[bytes]:
    """Canonical bytes of one Arrow array chunk: values, list lengths and strings, never buffers' padding."""
    if array.null_count:
        raise ArtifactError("artifacts hold no missing values; this column has nulls")
    kind = array.type
    if pa.types.is_fixed_size_list(kind):
        yield from _arrow_bytes(array.flatten())
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = np.diff(np.asarray(array.offsets, dtype=np.int64))
        yield _numpy_bytes(lengths)
        yield from _arrow_bytes(array.flatten())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        for value in array.to_pylist():
            encoded = value.encode()
            yield len(encoded).to_bytes(8, "little") + encoded
    elif pa.types.is_boolean(kind):
        yield _numpy_bytes(array.to_numpy(zero_copy_only=False).astype(np.uint8))
    else:
        yield _numpy_bytes(array.to_numpy(zero_copy_only=False))


def _digest_table(digest: ContentDigest, table: pa.Table) -> None:
    for name, column in zip(table.column_names, table.columns):
        for chunk in column.chunks:
            for part in _arrow_bytes(chunk):
                digest.update(name, part)


def full_meta(artifact: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance as stored: the kind of file, the format and the writer's version first."""
    return json.loads(canonical_json({"artifact": artifact, "format": FORMAT, "kernelscope_version": __version__, **provenance}))


def check_expected(path: str | Path, meta: Mapping[str, Any], expect: Mapping[str, Any] | None, artifact: str) -> None:
    """Every expected provenance field must equal the stored one (compared as canonical JSON)."""
    for key, wanted in (expect or {}).items():
        got = meta.get(key)
        if canonical_json(got) != canonical_json(wanted):
            shown_got, shown_wanted = shown(got), shown(wanted)
            raise ArtifactError(f"{path}: provenance field '{key}' is {shown_got} but this run expects {shown_wanted}; "
                                f"the file comes from another run or other params, {_fix(artifact)} with these params.")


def shown(value: Any, limit: int = 160) -> str:
    """A value as it appears in a refusal: canonical JSON, cut at ``limit`` characters."""
    text = canonical_json(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_kind(path: Path, meta: Any, artifact: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} file (no or unknown 'format' in its metadata); {_fix(artifact)}.")
    if meta.get("artifact") != artifact:
        raise ArtifactError(f"{path}: holds a {meta.get('artifact')!r} artifact where a {artifact!r} was expected; "
                            f"point at the right file or {_fix(artifact)}.")
    return meta


# --------------------------------------------------------------------------------------------- Parquet

class ParquetArtifactWriter:
    """Write one Parquet artifact block by block, atomically; the hash goes into the footer on close.

    Use as a context manager: ``with ParquetArtifactWriter(path, schema, "kernel", provenance) as w: w.write(table)``.
    A failure leaves any previous file at ``path`` untouched and no file under the final name.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, artifact: str, provenance: Mapping[str, Any], **writer_options: Any) -> None:
        self.path = Path(path)
        self.meta = full_meta(artifact, provenance)
        self.schema = schema.with_metadata({META_KEY: canonical_json(self.meta)})
        self._digest = ContentDigest(self.meta)
        self._options = {"compression": "zstd", **writer_options}
        self._stack = contextlib.ExitStack()
        self.rows = 0

    def __enter__(self) -> ParquetArtifactWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = pq.ParquetWriter(tmp, self.schema, **self._options)
        return self

    def write(self, table: pa.Table) -> None:
        table = table.cast(self.schema) if not table.schema.equals(self.schema, check_metadata=False) else table
        _digest_table(self._digest, table)
        self._writer.write_table(table.replace_schema_metadata(self.schema.metadata))
        self.rows += table.num_rows

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        try:
            if kind is None:
                self.meta_hash = self._digest.hexdigest()
                self._writer.add_key_value_metadata({HASH_KEY: self.meta_hash})
            self._writer.close()
        finally:
            # On an error the temporary file is removed and the final name is never written.
            self._stack.__exit__(kind, error, tb)


def write_parquet(path: str | Path, table: pa.Table, artifact: str, provenance: Mapping[str, Any], **writer_options: Any) -> dict[str, Any]:
    """One table as one artifact; returns the stored provenance plus its content hash."""
    with ParquetArtifactWriter(path, table.schema, artifact, provenance, **writer_options) as writer:
        writer.write(table)
    return {**writer.meta, "content_sha256": writer.meta_hash}


def _parquet_footer(path: Path, artifact: str) -> tuple[pq.ParquetFile, dict[str, Any], str]:
    if not path.exists():
        raise _missing(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {_fix(artifact)}.")
    try:
        parquet = pq.ParquetFile(path)
        kv = parquet.metadata.metadata or {}
        meta = json.loads(kv[META_KEY.encode()])
        stored = kv[HASH_KEY.encode()].decode()
    except KeyError:
        raise ArtifactError(f"{path}: carries no kernelscope provenance or content hash (an older or foreign file); {_fix(artifact)}.") from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not a readable Parquet artifact ({error.__class__.__name__}); the file is torn or "
                            f"corrupt, {_fix(artifact)}.") from None
    return parquet, _check_kind(path, meta, artifact), stored


def _mismatch(path: Path, artifact: str) -> ArtifactError:
    return ArtifactError(f"{path}: content does not match its recorded content hash (its values or metadata were modified or "
                         f"corrupted); {_fix(artifact)}.")


def _row_groups(path: Path, parquet: pq.ParquetFile, artifact: str) -> Iterator[pa.Table]:
    try:
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(f"{path}: a row group cannot be read ({error.__class__.__name__}); the file is corrupt, {_fix(artifact)}.") from None


def verify_parquet(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the content hash of the whole file (one row group in memory at a time), then check ``expect``."""
    path = Path(path)
    parquet, meta, stored = _parquet_footer(path, artifact)
    digest = ContentDigest(meta)
    for table in _row_groups(path, parquet, artifact):
        _digest_table(digest, table)
    if digest.hexdigest() != stored:
        raise _mismatch(path, artifact)
    check_expected(path, meta, expect, artifact)
    return {**meta, "content_sha256": stored}


def read_parquet(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """The whole table, verified, and its provenance."""
    path = Path(path)
    parquet, meta, stored = _parquet_footer(path, artifact)
    groups = list(_row_groups(path, parquet, artifact))
    digest = ContentDigest(meta)
    for table in groups:
        _digest_table(digest, table)
    if digest.hexdigest() != stored:
        raise _mismatch(path, artifact)
    check_expected(path, meta, expect, artifact)
    table = pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table()
    return table, {**meta, "content_sha256": stored}


def verified_row_groups(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], Iterator[pa.Table]]:
    """(provenance, row groups) of a file hashed whole first (one group in memory at a time), so no block is used before the check."""
    meta = verify_parquet(path, artifact, expect)
    return meta, _row_groups(Path(path), pq.ParquetFile(path), artifact)


# ----------------------------------------------------------------------------------------- safetensors

def _tensor_digest(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    digest = ContentDigest(meta)
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        digest.update(name, f"{array.dtype.str}{array.shape}".encode() + b"\0" + _numpy_bytes(array))
    return digest.hexdigest()


def write_safetensors(path: str | Path, tensors: Mapping[str, Any], artifact: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
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
    """A C-ordered numpy view or copy, keeping 0-d arrays 0-d (BatchNorm's num_batches_tracked; ascontiguousarray would make it (1,))."""
    array = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else np.asarray(value)
    return array if array.flags.c_contiguous else array.copy(order="C")


def read_safetensors(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors (numpy) and provenance of a verified safetensors artifact (safetensors never runs code)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise _missing(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {_fix(artifact)}.")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    except Exception as error:  # safetensors raises its own error types for a corrupt header or truncated data
        raise ArtifactError(f"{path}: not a readable safetensors file ({error.__class__.__name__}); the file is torn or corrupt, "
                            f"{_fix(artifact)}.") from None
    try:
        stamp = json.loads(header[META_KEY])
        meta, stored = stamp["provenance"], stamp["sha256"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: carries no kernelscope provenance or content hash (an older or foreign file); {_fix(artifact)}.") from None
    meta = _check_kind(path, meta, artifact)
    if _tensor_digest(meta, arrays) != stored:
        raise _mismatch(path, artifact)
    check_expected(path, meta, expect, artifact)
    return arrays, meta


# ------------------------------------------------------------------------------------------------ JSON

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
        raise _missing(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {_fix(artifact)}.")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error.__class__.__name__}); {_fix(artifact)}.") from None
    stamp = raw.get(META_KEY) if isinstance(raw, dict) else None
    if not isinstance(stamp, dict) or "sha256" not in stamp:
        raise ArtifactError(f"{path}: carries no kernelscope content hash (an older or foreign file); {_fix(artifact)}.")
    _check_kind(path, stamp, artifact)
    body = {k: v for k, v in raw.items() if k != META_KEY}
    unstamped = {k: v for k, v in stamp.items() if k != "sha256"}
    if hashlib.sha256(canonical_json({**body, META_KEY: unstamped})).hexdigest() != stamp["sha256"]:
        raise _mismatch(path, artifact)
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

