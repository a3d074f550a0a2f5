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
from kernelscope.core.artifact_errors import NOT_READABLE_AS, fix_hint, mismatch_error, missing_error
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import atomic_path, json_safe

META_KEY = "kernelscope"
HASH_KEY = "kernelscope_sha256"
FORMAT = "kernelscope-artifact/1"


def canonical_json(payload: Any) -> bytes:
    """Sorted keys, no spaces, no NaN: the same payload always gives the same bytes."""
    return json.dumps(json_safe(payload), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


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


def numpy_bytes(values: np.ndarray) -> bytes:
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
        yield numpy_bytes(lengths)
        yield from _arrow_bytes(array.flatten())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        for value in array.to_pylist():
            encoded = value.encode()
            yield len(encoded).to_bytes(8, "little") + encoded
    elif pa.types.is_boolean(kind):
        yield numpy_bytes(array.to_numpy(zero_copy_only=False).astype(np.uint8))
    else:
        yield numpy_bytes(array.to_numpy(zero_copy_only=False))


def _digest_table(digest: ContentDigest, table: pa.Table) -> None:
    for name, column in zip(table.column_names, table.columns):
        for chunk in column.chunks:
            for part in _arrow_bytes(chunk):
                digest.update(name, part)


def full_meta(artifact: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance as stored: the kind of file, the format and the writer's version first."""
    return json.loads(
        canonical_json({"artifact": artifact, "format": FORMAT, "kernelscope_version": __version__, **provenance})
    )


def check_expected(path: str | Path, meta: Mapping[str, Any], expect: Mapping[str, Any] | None, artifact: str) -> None:
    """Every expected provenance field must equal the stored one (compared as canonical JSON)."""
    for key, wanted in (expect or {}).items():
        got = meta.get(key)
        if canonical_json(got) != canonical_json(wanted):
            shown_got, shown_wanted = shown(got), shown(wanted)
            raise ArtifactError(
                f"{path}: provenance field '{key}' is {shown_got} but this run expects {shown_wanted}; "
                f"the file comes from another run or other params, {fix_hint(artifact)} with these params."
            )


def shown(value: Any, limit: int = 160) -> str:
    """A value as it appears in a refusal: canonical JSON, cut at ``limit`` characters."""
    text = canonical_json(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_kind(path: Path, meta: Any, artifact: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(
            f"{path}: not a {FORMAT} file (no or unknown 'format' in its metadata); {fix_hint(artifact)}."
        )
    if (artifact, meta.get("artifact")) in NOT_READABLE_AS:
        raise ArtifactError(f"{path}: holds {NOT_READABLE_AS[artifact, meta.get('artifact')]}.")
    if meta.get("artifact") != artifact:
        raise ArtifactError(
            f"{path}: holds a {meta.get('artifact')!r} artifact where a {artifact!r} was expected; "
            f"point at the right file or {fix_hint(artifact)}."
        )
    return meta


class ParquetArtifactWriter:
    """Write one Parquet artifact block by block, atomically; the hash goes into the footer on close.

    Use as a context manager: ``with ParquetArtifactWriter(path, schema, "kernel", provenance) as w: w.write(table)``.
    A failure leaves any previous file at ``path`` untouched and no file under the final name.
    """

    def __init__(
        self, path: str | Path, schema: pa.Schema, artifact: str, provenance: Mapping[str, Any], **writer_options: Any
    ) -> None:
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


def write_parquet(
    path: str | Path, table: pa.Table, artifact: str, provenance: Mapping[str, Any], **writer_options: Any
) -> dict[str, Any]:
    """One table as one artifact; returns the stored provenance plus its content hash."""
    with ParquetArtifactWriter(path, table.schema, artifact, provenance, **writer_options) as writer:
        writer.write(table)
    return {**writer.meta, "content_sha256": writer.meta_hash}


def _parquet_footer(path: Path, artifact: str) -> tuple[pq.ParquetFile, dict[str, Any], str]:
    if not path.exists():
        raise missing_error(path, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path}: is a folder, not a {artifact} file; remove it and {fix_hint(artifact)}.")
    try:
        parquet = pq.ParquetFile(path)
        kv = parquet.metadata.metadata or {}
        meta = json.loads(kv[META_KEY.encode()])
        stored = kv[HASH_KEY.encode()].decode()
    except KeyError:
        raise ArtifactError(
            f"{path}: carries no kernelscope provenance or content hash (an older or foreign file); "
            f"{fix_hint(artifact)}."
        ) from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as error:
        raise ArtifactError(
            f"{path}: not a readable Parquet artifact ({error.__class__.__name__}); the file is torn or "
            f"corrupt, {fix_hint(artifact)}."
        ) from None
    return parquet, check_kind(path, meta, artifact), stored


def _row_groups(path: Path, parquet: pq.ParquetFile, artifact: str) -> Iterator[pa.Table]:
    try:
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)
    except (pa.ArrowException, OSError) as error:
        raise ArtifactError(
            f"{path}: a row group cannot be read ({error.__class__.__name__}); the file is corrupt, "
            f"{fix_hint(artifact)}."
        ) from None


def verify_parquet(path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the content hash of the whole file (one row group in memory at a time), then check ``expect``."""
    path = Path(path)
    parquet, meta, stored = _parquet_footer(path, artifact)
    digest = ContentDigest(meta)
    for table in _row_groups(path, parquet, artifact):
        _digest_table(digest, table)
    if digest.hexdigest() != stored:
        raise mismatch_error(path, artifact)
    check_expected(path, meta, expect, artifact)
    return {**meta, "content_sha256": stored}


def read_parquet(
    path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """The whole table, verified, and its provenance."""
    path = Path(path)
    parquet, meta, stored = _parquet_footer(path, artifact)
    groups = list(_row_groups(path, parquet, artifact))
    digest = ContentDigest(meta)
    for table in groups:
        _digest_table(digest, table)
    if digest.hexdigest() != stored:
        raise mismatch_error(path, artifact)
    check_expected(path, meta, expect, artifact)
    table = pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table()
    return table, {**meta, "content_sha256": stored}


def verified_row_groups(
    path: str | Path, artifact: str, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Iterator[pa.Table]]:
    """(provenance, row groups) of a file hashed whole first (one group in memory at a time), so no block is used
    before the check.
    """
    meta = verify_parquet(path, artifact, expect)
    return meta, _row_groups(Path(path), pq.ParquetFile(path), artifact)
