"""${NAME} in sources.<name>.data.path is the environment variable NAME at load time, so a committed params file
names no machine path; params-mnist.yaml (the paper's Table 1 on MNIST) loads that way and is params.yaml with
other datasets, sources and CNN (no MNIST needed: the variable points at an empty temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from kernelscope.core.errors import ParamsError
from kernelscope.core.params import load_params
from tests.support.cli import refused

REPO = Path(__file__).resolve().parents[2]
VAR = "KERNELSCOPE_TEST_DATA_DIR"


def write(tmp_path, path: str, weights: str | None = None) -> Path:
    source = {"data": {"format": "idx", "path": path}}
    if weights is not None:
        source["model"] = {"factory": "pkg.mod:make", "weights": weights}
    file = tmp_path / "p.yaml"
    file.write_text(yaml.safe_dump({"datasets": ["mine"], "sources": {"mine": source}}))
    return file


def test_a_set_variable_is_expanded_in_the_data_path_only(tmp_path, monkeypatch):
    monkeypatch.setenv(VAR, str(tmp_path / "data"))
    params = load_params(write(tmp_path, "${" + VAR + "}/mnist", weights="${" + VAR + "}/w.pt"))
    assert params.sources["mine"].data.path == f"{tmp_path}/data/mnist"
    assert params.sources["mine"].model.weights == "${" + VAR + "}/w.pt"  # nothing else is expanded
    assert load_params(write(tmp_path, "data/$HOME")).sources["mine"].data.path == "data/$HOME"  # only ${NAME}


@pytest.mark.parametrize("value, state", [(None, "not set"), ("", "empty")])
def test_an_unset_or_empty_variable_names_itself_the_file_and_the_field(tmp_path, monkeypatch, value, state):
    if value is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, value)
    file = write(tmp_path, "${" + VAR + "}")
    with pytest.raises(ParamsError) as error:
        load_params(file)
    assert str(error.value) == (
        f"{file}: sources.mine.data.path is '${{{VAR}}}', but the environment variable {VAR} is {state}; "
        f"set it to the folder or file to read (export {VAR}=/path/to/data), or write the path into {file}."
    )


def test_a_malformed_reference_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(VAR, str(tmp_path))
    with pytest.raises(ParamsError, match=r"sources\.mine\.data\.path is '\$\{1X\}/a', whose '\$\{' starts no"):
        load_params(write(tmp_path, "${1X}/a"))


def test_the_cli_refuses_an_unset_variable_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(VAR, raising=False)
    file = write(tmp_path, "${" + VAR + "}")
    argv = ["data", "--params", str(file), "--dataset", "mine", "--out", str(tmp_path / "out"), "--quiet"]
    refused(argv, capsys, f"environment variable {VAR} is not set", "sources.mine.data.path", str(file))
    assert not (tmp_path / "out").exists()


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_params_mnist_loads_with_the_variable_and_names_no_machine_path(tmp_path, monkeypatch):
    file = REPO / "params-mnist.yaml"
    monkeypatch.delenv("KERNELSCOPE_MNIST_DIR", raising=False)
    with pytest.raises(ParamsError, match=r"sources\.mnist2\.data\.path .* KERNELSCOPE_MNIST_DIR is not set"):
        load_params(file)
    monkeypatch.setenv("KERNELSCOPE_MNIST_DIR", str(tmp_path))
    params = load_params(file)
    assert params.datasets == ("mnist2", "mnist10")
    mnist2, mnist10 = params.sources["mnist2"].data, params.sources["mnist10"].data
    assert (mnist2.format, mnist2.path, mnist2.classes) == ("idx", str(tmp_path), (0, 1))
    assert (mnist10.format, mnist10.path, mnist10.classes) == ("idx", str(tmp_path), None)
    assert params.cnn.channels == (8, 8, 16, 24, 32, 48) and params.cnn.hidden == (256, 256)
    cnn = params.cnn
    assert (cnn.batch_norm, cnn.optimizer, cnn.lr, cnn.momentum, cnn.batch_size, cnn.epochs) == (
        True, "sgd", 1e-3, 0.0, 4, 100,
    )  # fmt: skip
    assert (params.table.n_models, params.table.archs, params.table.kind) == (5, ("mlp", "cnn"), "trntk")
    # Everything else is params.yaml's, the MLP included.
    ours, project = params.model_dump(mode="json"), load_params(REPO / "params.yaml").model_dump(mode="json")
    differing = sorted(key for key in project if ours[key] != project[key])
    assert differing == ["cnn", "datasets", "sources"]

    text = file.read_text(encoding="utf-8")
    for value in _strings(yaml.safe_load(text)):
        assert not os.path.isabs(value) and not value.startswith("~"), value
    assert not re.search(r"(?<![\w$])/(work|home|tmp|Users|mnt|data|srv)\b", text)
    assert "shared/data" not in text and "mnist-test-first5000" not in text
