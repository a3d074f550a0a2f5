"""Typed view of params.yaml: every tunable value of a run, validated in one place.

The sections are in core.param_sections, their value types in core.param_types."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from kernelscope.core.errors import ParamsError
from kernelscope.core.fileio import sha256_json
from kernelscope.core.param_counterfactual import CounterfactualParams
from kernelscope.core.param_loss_kernel import LossKernelParams, LossKernelSweepParams, MultitaskParams
from kernelscope.core.param_sections import (
    CNNParams,
    DataParams,
    KernelParams,
    KGLMParams,
    PoisonParams,
    ResNetParams,
    ScaleParams,
    StructureParams,
    TableParams,
    TrainParams,
)
from kernelscope.core.param_sources import SourceParams
from kernelscope.core.param_types import BUILTIN_DATASETS, RESERVED_NAMES, DatasetName, Int, Section


class Params(Section):
    seed: Int = Field(0, ge=0, description="Seed of every random choice of a run.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when present.")
    datasets: tuple[DatasetName, ...] = Field(
        ("digits2", "digits10"), min_length=1, description="Datasets the main job runs."
    )
    outputs: str = Field("outputs/flows", description="Root folder of artifacts written by flows (DVC: outputs/dvc).")
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    cnn: CNNParams = CNNParams()
    kernel: KernelParams = KernelParams()
    kglm: KGLMParams = KGLMParams()
    table: TableParams = TableParams()
    poison: PoisonParams = PoisonParams()
    loss_kernel: LossKernelParams = LossKernelParams()
    multitask: MultitaskParams = MultitaskParams()
    loss_kernel_sweep: LossKernelSweepParams = LossKernelSweepParams()
    structure: StructureParams = StructureParams()
    resnet: ResNetParams = ResNetParams()
    sources: dict[DatasetName, SourceParams] = Field(
        default_factory=dict,
        description="Users' own data sets (and models) by name; each name can be used wherever a dataset name is.",
    )
    scale: ScaleParams = ScaleParams()
    counterfactual: CounterfactualParams = CounterfactualParams()

    @model_validator(mode="after")
    def _known_datasets(self) -> Params:
        from kernelscope.data.readers import READERS  # imported here: the readers import params

        clash = sorted(set(self.sources) & set(BUILTIN_DATASETS + RESERVED_NAMES))
        if clash:
            raise ValueError(f"sources: name {clash[0]!r} is taken by the project; rename that source")
        known = set(BUILTIN_DATASETS) | set(self.sources)
        for field, names in (
            ("datasets", self.datasets),
            ("structure.subjects", tuple(s for s in self.structure.subjects if s != "multitask")),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"{field}: {unknown[0]!r} is neither a bundled dataset ({', '.join(BUILTIN_DATASETS)}) "
                    "nor a key of sources; add it under sources or fix the name"
                )
        for name, source in self.sources.items():
            model = source.model
            if model.factory and model.registry:
                raise ValueError(
                    f"sources.{name}.model: give either registry (train here) or factory (with weights), not both"
                )
            if model.factory and not model.weights:
                raise ValueError(
                    f"sources.{name}.model.weights: a factory model needs its trained weights (.safetensors or .pt)"
                )
            if model.weights and not model.factory:
                raise ValueError(
                    f"sources.{name}.model.factory: weights need the factory that builds their model "
                    "('package.module:function')"
                )
            if READERS[source.data.format].path is not None and not source.data.path:
                raise ValueError(
                    f"sources.{name}.data.path: format {source.data.format!r} reads a file or folder; set its path"
                )
        return self

    def source(self, dataset: str) -> SourceParams | None:
        """The user's source behind a dataset name, or None for a bundled dataset."""
        return self.sources.get(dataset)


def params_hash(params: Params) -> str:
    """Short hash of every value that can change a result (not where outputs go or how work is spread):
    the same for a run from the UI, ``dvc repro`` or the CLI when their params agree."""
    return sha256_json(params.model_dump(mode="json", exclude={"outputs", "scale"}))[:16]


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    if not field or first["type"] == "value_error":  # a check across fields (a model validator): its message names them
        return f"{source}: {first['msg'].removeprefix('Value error, ')}; fix it in {source}."
    got = first.get("input")
    return f"{source}: field '{field}' is invalid ({first['msg']}; got {got!r}); fix it in {source}."


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_source_paths(raw: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """``raw`` with each ``${NAME}`` in a ``sources.<name>.data.path`` replaced by the environment variable NAME,
    so a committed params file names no machine path; an unset or empty variable is refused, naming it, the file
    and the field. Nothing else of the file is expanded."""
    sources = raw.get("sources")
    if not isinstance(sources, dict):
        return raw
    expanded = dict(sources)
    for name, entry in sources.items():
        data = entry.get("data") if isinstance(entry, dict) else None
        path = data.get("path") if isinstance(data, dict) else None
        if not isinstance(path, str) or "${" not in path:
            continue
        field = f"sources.{name}.data.path"
        if "${" in ENV_REFERENCE.sub("", path):
            raise ParamsError(
                f"{source}: {field} is {path!r}, whose '${{' starts no ${{NAME}} of letters, digits and "
                f"underscores; write the variable as ${{NAME}} or the path itself, in {source}."
            )

        def value(match: re.Match[str], field: str = field, path: str = path) -> str:
            var = match.group(1)
            got = os.environ.get(var, "")
            if not got:
                state = "empty" if var in os.environ else "not set"
                raise ParamsError(
                    f"{source}: {field} is {path!r}, but the environment variable {var} is {state}; "
                    f"set it to the folder or file to read (export {var}=/path/to/data), or write the path "
                    f"into {source}."
                )
            return got

        expanded[name] = {**entry, "data": {**data, "path": ENV_REFERENCE.sub(value, path)}}
    return {**raw, "sources": expanded}


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    raw = expand_source_paths(raw, source)
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found; run from the project root or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save the file as UTF-8."
        ) from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error.__class__.__name__}); fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections; fix the file.")
    return params_from_dict(raw, source=str(path))
