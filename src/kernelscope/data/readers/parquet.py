"""Parquet tables: a label column and feature columns (or a list column 'features'), optional 'split' column
and 'image_shape' schema metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, as_shape, register_reader, split_to_is_test


@register_reader("parquet", path="file")
def read_parquet(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001
        raise ArtifactError(
            f"{source}: not a readable Parquet file ({error.__class__.__name__}: {error}); "
            "point data.path at a Parquet file."
        ) from None
    columns = table.column_names

    def column(name: str, field: str | None):
        if name not in columns:
            fix = f"set {field} to the right column" if field else "add it"
            raise ArtifactError(f"{source}: has no column '{name}' (columns: {', '.join(columns)}); {fix}.")
        col = table.column(name)
        if col.null_count:
            raise ArtifactError(
                f"{source}: column '{name}' has {col.null_count} missing (null) values; fill or drop those rows."
            )
        return col

    def numeric(typ) -> bool:
        return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)

    label = column(spec.label_column, "data.label_column")
    y_name = f"column '{spec.label_column}'"
    if not numeric(label.type):
        raise ArtifactError(
            f"{source}: {y_name} has type {label.type}, not integer labels; store the classes as integers 0..K-1."
        )
    y = label.to_numpy()

    if spec.feature_columns is not None:
        names = list(spec.feature_columns)
        if not names:
            raise ArtifactError(f"{source}: data.feature_columns is empty; list the feature columns or set it to null.")
        parts = []
        for name in names:
            col = column(name, "data.feature_columns")
            if not numeric(col.type):
                raise ArtifactError(
                    f"{source}: feature column '{name}' has type {col.type}, not a number; "
                    "drop it from data.feature_columns or store it as numbers."
                )
            parts.append(col.to_numpy())
        x = np.stack(parts, axis=1)
        x_name = "data.feature_columns" if len(names) > 1 else f"column '{names[0]}'"
    elif "features" in columns and (
        pa.types.is_list(table.schema.field("features").type)
        or pa.types.is_large_list(table.schema.field("features").type)
        or pa.types.is_fixed_size_list(table.schema.field("features").type)
    ):
        col = column("features", None).combine_chunks()
        x_name = "column 'features'"
        if not numeric(col.type.value_type):
            raise ArtifactError(
                f"{source}: {x_name} holds {col.type.value_type} items, not numbers; store numeric feature lists."
            )
        flat = col.flatten()
        if flat.null_count:
            raise ArtifactError(
                f"{source}: {x_name} has {flat.null_count} missing (null) items; fill them before reading."
            )
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
        else:
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            width = int(lengths[0]) if lengths.size else 0
            odd = np.flatnonzero(lengths != width)
            if odd.size:
                raise ArtifactError(
                    f"{source}: {x_name} has rows of different lengths (row 0: {width}, row "
                    f"{int(odd[0])}: {int(lengths[odd[0]])}); store the same number of features in "
                    "every row."
                )
        x = flat.to_numpy(zero_copy_only=False).reshape(len(col), width)
    else:
        names = [
            name
            for name in columns
            if name not in (spec.label_column, "split") and numeric(table.schema.field(name).type)
        ]
        if not names:
            raise ArtifactError(
                f"{source}: has no numeric feature columns besides '{spec.label_column}' "
                f"(columns: {', '.join(columns)}); add them or set data.feature_columns."
            )
        x = np.stack([column(name, None).to_numpy() for name in names], axis=1)
        x_name = "the feature columns"

    is_test = None
    if "split" in columns:
        split = column("split", None)
        if not (
            pa.types.is_string(split.type) or pa.types.is_large_string(split.type) or pa.types.is_dictionary(split.type)
        ):
            raise ArtifactError(
                f"{source}: column 'split' has type {split.type}, not strings; store 'train' or 'test' per row."
            )
        is_test = split_to_is_test(
            np.asarray(split.to_pylist(), dtype=str), source=source, name="column 'split'", n=len(y)
        )

    image_shape, shape_origin = None, "x"
    if spec.image_shape is not None:
        image_shape, shape_origin = tuple(spec.image_shape), "data.image_shape"
    else:
        meta = table.schema.metadata or {}
        if b"image_shape" in meta:
            try:
                stored = json.loads(meta[b"image_shape"])
            except ValueError:
                raise ArtifactError(
                    f"{source}: schema metadata 'image_shape' is not JSON "
                    f"({meta[b'image_shape'][:40]!r}); store it as a JSON list such as [3, 32, "
                    "32]."
                ) from None
            image_shape = as_shape(stored, source=source, name="schema metadata 'image_shape'")
            shape_origin = "schema metadata 'image_shape'"
    return RawArrays(x, y, x_name, y_name, image_shape, shape_origin, None, is_test)
