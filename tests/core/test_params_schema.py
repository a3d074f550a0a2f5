"""The params JSON schema (what a Prefect form and the server check) offers exactly the registries' names."""

from kernelscope.core.params import Params
from kernelscope.data.readers import READERS
from kernelscope.kernels.registry import model_kinds
from kernelscope.models.zoo import MODELS


def _properties(section: str) -> dict:
    return Params.model_json_schema()["$defs"][section]["properties"]


def test_registry_names_are_the_schema_enums():
    assert _properties("KernelParams")["kinds"]["items"]["enum"] == list(model_kinds())
    assert _properties("TableParams")["kind"]["enum"] == list(model_kinds())
    assert _properties("TrainParams")["arch"]["enum"] == list(MODELS) == ["mlp", "cnn", "resnet"]
    assert _properties("TableParams")["archs"]["items"]["enum"] == list(MODELS)
    assert _properties("DataSourceParams")["format"]["enum"] == list(READERS)
    assert "loss_cov" not in _properties("KernelParams")["kinds"]["items"]["enum"]  # written by the loss-kernel stage
