"""The value types of params: strict numbers, bounded widths, dataset names, and names checked against
the registries (architectures, kernel kinds, data formats) when params are validated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler, Strict
from pydantic_core import PydanticCustomError

BuiltinDataset = Literal["digits2", "digits10"]


BUILTIN_DATASETS = ("digits2", "digits10")


# A bundled dataset or a key of params.sources (a user's own data); checked against sources by Params.
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


RESERVED_NAMES = ("multitask", "forensics", "table")  # folders of outputs/ that are not datasets


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not a boolean")
    return value


# Numbers that refuse booleans (pydantic's lax mode reads `epochs: true` as 1). Ints are strict: YAML
# ints pass, nothing else does. Floats stay lax otherwise: ints pass (`lr: 1`), and so do numeric
# strings, because YAML 1.1 reads `1e-3` (no dot) as the string '1e-3'.
Int = Annotated[int, Strict()]


Float = Annotated[float, BeforeValidator(_not_a_bool)]


MAX_WIDTH = 65536  # no layer width in params can ask for more (a 65536² Linear is already 16 GiB in float32)


Width = Annotated[Int, Field(ge=1, le=MAX_WIDTH)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RegistryChoices:
    """Annotation metadata: the JSON schema of a registry name lists the registry's names as its enum (read when
    the schema is made), so a Prefect form offers them and the server refuses any other name at once."""

    names: Callable[[], Iterable[str]]

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["enum"] = list(self.names())
        return json_schema


def _model_names() -> Iterable[str]:
    from kernelscope.models.zoo import MODELS

    return MODELS


def _kernel_names() -> Iterable[str]:
    from kernelscope.kernels.registry import model_kinds

    return model_kinds()


def _reader_names() -> Iterable[str]:
    from kernelscope.data.readers import READERS

    return READERS


def _registered_arch(value: str) -> str:
    # Checked against the model registry when params are validated (imported then: the registry needs torch).
    from kernelscope.models.zoo import MODELS

    if value not in MODELS:
        names = [repr(name) for name in MODELS]
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError(
            "model_arch", "Input should be {expected} (kernelscope.models.zoo.MODELS)", {"expected": expected}
        )
    return value


ArchName = Annotated[
    str, Strict(), AfterValidator(_registered_arch), RegistryChoices(_model_names)
]  # a key of kernelscope.models.zoo.MODELS


def _registered_kind(value: str) -> str:
    # Checked against the registry when params are validated, so a kind registered at runtime counts.
    from kernelscope.kernels.registry import model_kinds

    kinds = model_kinds()
    if value not in kinds:
        # The wording of pydantic's Literal error, as before the kinds were registered.
        expected = ", ".join(repr(k) for k in kinds[:-1]) + f" or {kinds[-1]!r}"
        raise PydanticCustomError("kernel_kind", "Input should be {expected}", {"expected": expected})
    return value


KernelKind = Annotated[
    str, Strict(), AfterValidator(_registered_kind), RegistryChoices(_kernel_names)
]  # a kind of kernelscope.kernels.registry


# The attributors of kernelscope.counterfactual.attributors: these four, and <family>:<kernel kind> per family.
GRADIENT_ATTRIBUTORS = ("trak", "tracin", "grad_dot", "grad_cos", "ekfac")
KERNEL_ATTRIBUTORS = ("kglm", "kernel")


def attributor_names() -> list[str]:
    """Every attributor name (kernel kinds from the kernel registry, so a registered kind counts)."""
    kinds = list(_kernel_names())
    return [*GRADIENT_ATTRIBUTORS, *(f"{family}:{kind}" for family in KERNEL_ATTRIBUTORS for kind in kinds)]


def _attributor_names() -> Iterable[str]:
    return attributor_names()


def _registered_attributor(value: str) -> str:
    # Checked when params are validated: kglm:<kind> and kernel:<kind> follow the kernel registry.
    names = list(_attributor_names())
    if value not in names:
        raise PydanticCustomError(
            "attributor",
            "Input should be an attributor: trak, tracin, grad_dot, grad_cos, kglm:<kind> or kernel:<kind> "
            "with a kernel kind (kernelscope.counterfactual.attributors)",
        )
    return value


AttributorName = Annotated[
    str, Strict(), AfterValidator(_registered_attributor), RegistryChoices(_attributor_names)
]  # a name of kernelscope.counterfactual.attributors.attributor_names()


def _registered_format(value: Any) -> str:
    # Checked against READERS when params are validated (imported then: the readers import this module).
    from kernelscope.data.readers import READERS

    if not isinstance(value, str) or value not in READERS:
        # The wording of pydantic's Literal error, as before the formats were registered.
        names = [repr(name) for name in READERS]
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


DataFormat = Annotated[
    str, BeforeValidator(_registered_format), RegistryChoices(_reader_names)
]  # a key of kernelscope.data.readers.READERS


StructureSubject = DatasetName  # a dataset's model, or 'multitask' (the multitask model)
