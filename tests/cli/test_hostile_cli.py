"""Hostile input through the CLI: every refusal is exit code 2 and one line
`kernelscope <cmd>: error: <sentence naming the file or field and the fix>`, no traceback, and the
run's folder is byte for byte what it was (nothing written, nothing overwritten, no temporary left).

One healthy run folder (data, model, trntk kernel and kGLM of digits2 on tiny params) is built
once; each case breaks a private copy of it.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kernelscope.cli import main
from kernelscope.core.fileio import json_safe, sha256_tree, write_json_atomic
from kernelscope.core.params import params_from_dict
from tests.support.cli import Payload, cli_args, edit_params, factory_source, healthy_weights, refused
from tests.support.runs import TINY_PARAMS


@pytest.fixture
def run(tiny_run, capsys) -> Path:
    """A private copy of a run folder with data, model, trntk kernel and kGLM of digits2 (TINY_PARAMS)."""
    made = tiny_run(("data", "train", "kernel", "kglm")).root
    capsys.readouterr()  # whatever building it printed
    return made


def _unchanged(run: Path, argv: list[str], capsys, *fragments: str) -> str:
    """Refused with one sentence holding every fragment, and the output tree untouched."""
    before = sha256_tree(run / "out")
    err = refused(argv, capsys, *fragments)
    assert sha256_tree(run / "out") == before
    return err


# ----------------------------------------------------------------------------------- params.yaml (items 1-4)


def test_params_file_that_is_not_utf8(run, capsys):
    (run / "params.yaml").write_bytes(b"\xff\xfe" + "seed: 1\n".encode("utf-16-le"))
    _unchanged(
        run, cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "params.yaml", "not UTF-8", "save the file as UTF-8"
    )


@pytest.mark.parametrize(
    "section, values, fragments",
    [
        ("train", {"hidden": [0]}, ["train.hidden", "greater than or equal to 1"]),
        ("train", {"hidden": [-5]}, ["train.hidden", "greater than or equal to 1"]),
        ("train", {"hidden": [16, 10**9]}, ["train.hidden.1", "less than or equal to 65536"]),
        ("cnn", {"channels": [8, 10**7]}, ["cnn.channels.1", "65536"]),
        ("resnet", {"widths": [0]}, ["resnet.widths.0"]),
        ("multitask", {"embed": 10**6}, ["multitask.embed", "65536"]),
        ("multitask", {"hidden": 10**6}, ["multitask.hidden", "65536"]),
        ("train", {"epochs": True}, ["train.epochs", "valid integer", "True"]),
        ("train", {"batch_size": 16.5}, ["train.batch_size", "valid integer"]),
        ("train", {"lr": True}, ["train.lr", "not a boolean"]),
        ("kglm", {"standardize": 1}, ["kglm.standardize", "valid boolean"]),
        ("poison", {"k": 3, "m": 4}, ["poison.m", "poison.k", "at most"]),
        ("multitask", {"settle_steps": 100, "eval_every": 0}, ["multitask.settle_steps", "eval_every above 0"]),
    ],
    ids=[
        "hidden-zero",
        "hidden-negative",
        "hidden-huge",
        "cnn-channels-huge",
        "resnet-width-zero",
        "embed-huge",
        "mt-hidden-huge",
        "epochs-true",
        "batch-float",
        "lr-true",
        "standardize-int",
        "m-above-k",
        "settle-without-evaluations",
    ],
)
def test_params_values_are_refused_naming_the_field(run, capsys, section, values, fragments):
    edit_params(run, lambda raw: raw.setdefault(section, {}).update(values))
    _unchanged(run, cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "params.yaml", *fragments)


def test_numbers_written_as_yaml_reads_them_still_validate():
    raw = copy.deepcopy(TINY_PARAMS)
    raw["train"].update(lr=1)  # an int for a float
    raw["kglm"].update(alpha="1e-3", tol=0.001)  # YAML 1.1 reads 1e-3 (no dot) as a string
    raw["poison"] = {"k": 3, "m": 3}
    params = params_from_dict(raw)
    assert params.train.lr == 1.0 and params.kglm.alpha == 1e-3 and params.poison.m == 3


# ----------------------------------------------------------------------------------- device (item 5)


def test_cuda_device_without_cuda(run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    edit_params(run, lambda raw: raw.update(device="cuda"))
    _unchanged(run, cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "'device'", "device: auto or device: cpu")


# ----------------------------------------------------------------------------------- the file system (item 6)


def test_out_that_is_a_file(run, capsys):
    (run / "a-file").write_text("not a folder")
    argv = [
        "data",
        "--params",
        str(run / "params.yaml"),
        "--dataset",
        "digits2",
        "--out",
        str(run / "a-file"),
        "--quiet",
    ]
    _unchanged(run, argv, capsys, "a-file", "is a file, not a folder")
    assert (run / "a-file").read_text() == "not a folder"


def test_out_below_a_file(run, capsys):
    (run / "a-file").write_text("not a folder")
    argv = [
        "data",
        "--params",
        str(run / "params.yaml"),
        "--dataset",
        "digits2",
        "--out",
        str(run / "a-file" / "sub"),
        "--quiet",
    ]
    _unchanged(run, argv, capsys, f"{run / 'a-file'}: is a file where a folder", "--out")


def test_artifact_name_taken_by_a_folder(run, capsys):
    target = run / "out" / "digits2" / "data" / "train.parquet"
    target.unlink()
    (target / "inside").mkdir(parents=True)
    _unchanged(run, cli_args(run, ["data"]), capsys, str(target), "is a folder where a file must be")


def test_data_folder_that_is_a_file(run, capsys):
    data = run / "out" / "digits2" / "data"
    shutil.rmtree(data)
    data.write_text("in the way")
    _unchanged(run, cli_args(run, ["data"]), capsys, str(data), "not a folder", "--out")


@pytest.mark.parametrize("root", ["/proc", "/sys"])
def test_out_on_a_kernel_file_system(run, capsys, root):
    argv = [
        "data",
        "--params",
        str(run / "params.yaml"),
        "--dataset",
        "digits2",
        "--out",
        f"{root}/kernelscope-test",
        "--quiet",
    ]
    _unchanged(run, argv, capsys, f"{root}/kernelscope-test", "kernel file system", "choose a folder on disk")
    assert not Path(f"{root}/kernelscope-test").exists()


@pytest.mark.parametrize(
    "code, fragment",
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EDQUOT, "quota"),
    ],
)
def test_failing_rename_leaves_the_previous_kernel(run, capsys, monkeypatch, code, fragment):
    import kernelscope.core.fileio

    def refuse(src, dst):
        raise OSError(code, "simulated", str(src), None, str(dst))

    monkeypatch.setattr(kernelscope.core.fileio.os, "replace", refuse)
    target = run / "out" / "digits2" / "kernels" / "trntk"
    _unchanged(run, cli_args(run, ["kernel", "--kind", "trntk"]), capsys, str(target), fragment, "--out")


def test_disk_full_inside_the_parquet_writer(run, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as pyarrow raises it: no file name

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    _unchanged(
        run, cli_args(run, ["kernel", "--kind", "trntk"]), capsys, str(run / "out"), "no space left", "free some space"
    )


# ----------------------------------------------------------------------------------- MLflow (item 7)


@pytest.mark.parametrize(
    "uri, fragment",
    [("sqlite:////nonexistent-kernelscope-dir/x.db", "/nonexistent-kernelscope-dir"), ("foo://bar", "scheme 'foo'")],
)
@pytest.mark.parametrize("command", [["kglm"], ["explain", "--index", "0"]])
def test_unusable_tracking_uri_is_refused_before_any_output(run, capsys, monkeypatch, uri, fragment, command):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _unchanged(run, cli_args(run, command), capsys, "MLFLOW_TRACKING_URI", fragment, "--no-track")
    assert not Path("/nonexistent-kernelscope-dir").exists()


# ----------------------------------------------------------------------------------- explain and structure (item 8)


def _digits_input(run: Path, name: str, rows: int) -> Path:
    x = np.zeros((rows, 64), dtype=np.float32)
    path = run / name
    if path.suffix == ".npz":
        np.savez(path, x=x)
    else:
        pq.write_table(pa.table({"features": pa.array([list(r) for r in x], type=pa.list_(pa.float32()))}), path)
    return path


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--index", "0", "--top-k", "-3"], ["--top-k -3", "from 1 to"]),
        (["--index", "0", "--top-k", "0"], ["--top-k 0", "from 1 to"]),
        (["--index", "0", "--top-k", "100000"], ["--top-k 100000", "training points"]),
        (["--index", "0", "--kinds", "rbf"], ["'rbf'", "trntk, trntk0"]),
    ],
    ids=["top-k-negative", "top-k-zero", "top-k-too-many", "unknown-kind"],
)
def test_explain_arguments(run, capsys, extra, fragments):
    _unchanged(run, cli_args(run, ["explain", "--no-track", *extra]), capsys, *fragments)


@pytest.mark.parametrize(
    "name, rows, fragments",
    [
        ("three.npz", 3, ["three.npz", "holds 3 inputs", "explain takes one"]),
        ("three.parquet", 3, ["three.parquet", "holds 3 inputs"]),
        ("empty.npz", 0, ["empty.npz", "holds no inputs"]),
        ("empty.parquet", 0, ["empty.parquet", "holds no inputs"]),
    ],
)
def test_explain_input_rows(run, capsys, name, rows, fragments):
    path = _digits_input(run, name, rows)
    _unchanged(run, cli_args(run, ["explain", "--no-track", "--input", str(path)]), capsys, *fragments)


def test_explain_npz_without_x(run, capsys):
    np.savez(run / "digit.npz", features=np.zeros(64, dtype=np.float32))
    _unchanged(
        run,
        cli_args(run, ["explain", "--no-track", "--input", str(run / "digit.npz")]),
        capsys,
        "digit.npz",
        "['features']",
        "'x'",
    )


def test_structure_unknown_subject(run, capsys):
    argv = [
        "structure",
        "--subject",
        "nope",
        "--params",
        str(run / "params.yaml"),
        "--out",
        str(run / "out"),
        "--quiet",
        "--no-track",
    ]
    _unchanged(run, argv, capsys, "'nope'", "digits2, digits10, multitask")


# ----------------------------------------------------------------------------------- em_layers (item 9)


def test_unknown_em_layer_creates_no_folder(run, capsys):
    edit_params(run, lambda raw: raw["kernel"].update(em_layers=["nope"]))
    _unchanged(
        run, cli_args(run, ["kernel", "--kind", "em"]), capsys, "kernel.em_layers", "['nope']", "choose from 0, 1"
    )
    assert not (run / "out" / "digits2" / "kernels" / "em").exists()


# ----------------------------------------------------------------------------------- JSON without NaN (item 10)


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_safe_and_the_json_writer(tmp_path):
    payload = {
        "a": math.nan,
        "b": [1.0, math.inf, (-math.inf, 2)],
        "c": np.float32("nan"),
        "d": np.float64(0.5),
        "e": 3,
        "f": None,
    }
    assert json_safe(payload) == {"a": None, "b": [1.0, None, [None, 2]], "c": None, "d": 0.5, "e": 3, "f": None}
    write_json_atomic(tmp_path / "m.json", payload)
    assert _strict_json((tmp_path / "m.json").read_text())["a"] is None


def test_metrics_and_stdout_hold_null_not_nan(run, capsys, monkeypatch):
    for metrics in (run / "out" / "digits2" / "kglm").glob("*/metrics.json"):
        _strict_json(metrics.read_text())
    import kernelscope.cli

    monkeypatch.setattr(kernelscope.cli, "cmd_data", lambda args, params: {"tau_k": math.nan, "r_miss": [math.inf]})
    assert main(cli_args(run, ["data"])) == 0
    assert _strict_json(capsys.readouterr().out) == {"tau_k": None, "r_miss": [None]}


# ----------------------------------------------------------------------------------- users' weights (items 11, 12)


@pytest.mark.parametrize("writer", ["protocol-2", "protocol-4", "torch-save"])
def test_refused_pickle_names_its_global(run, capsys, writer):
    marker, weights = run / "pwned", run / "net.pt"
    if writer == "torch-save":
        torch.save({"0.weight": Payload(marker)}, weights)
    else:
        weights.write_bytes(pickle.dumps({"0.weight": Payload(marker)}, protocol=int(writer[-1])))
    factory_source(run, weights)
    _unchanged(run, cli_args(run, ["train"], "blobs"), capsys, "net.pt", "refused", "posix.system")
    assert not marker.exists()


def test_integer_weights_for_a_float_model(run, capsys):
    from safetensors.torch import load_file, save_file

    weights = healthy_weights(run / "net.safetensors")
    state = load_file(str(weights))
    state["0.weight"] = state["0.weight"].round().to(torch.int32)
    save_file(state, str(weights))
    factory_source(run, weights)
    _unchanged(
        run, cli_args(run, ["train"], "blobs"), capsys, "net.safetensors", "0.weight", "torch.int32", "torch.float32"
    )


def test_float64_weights_are_still_cast(tmp_path):
    from safetensors.torch import save_file

    from kernelscope.examples.byo import make_net
    from kernelscope.models.user_models import load_weights

    state = {k: v.double().contiguous() for k, v in make_net(16, 32, 4).state_dict().items()}
    save_file(state, str(tmp_path / "net.safetensors"))
    model = load_weights(make_net(16, 32, 4), tmp_path / "net.safetensors")
    assert next(model.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------------- divergence (item 13)


def test_diverging_training_writes_no_checkpoint(run, capsys):
    edit_params(run, lambda raw: raw["train"].update(lr=1e8))
    _unchanged(run, cli_args(run, ["train"]), capsys, "diverged", "train.lr", "lower train.lr")


# ----------------------------------------------------------------------------------- Prefect deployments (item 14)


def test_deployments_refuse_unknown_top_level_parameters():
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.serve import deployments

    for deployment in deployments(params_from_dict(TINY_PARAMS)):
        schema = deployment._parameter_openapi_schema.model_dump(
            exclude_unset=True
        )  # what the deployment sends to the API
        assert schema["additionalProperties"] is False
        assert validate(dict(deployment.parameters), schema) == []  # the form's defaults still pass
        with pytest.raises(ValidationError, match="'parms' was unexpected"):
            validate({**deployment.parameters, "parms": {}}, schema, raise_on_error=True)
