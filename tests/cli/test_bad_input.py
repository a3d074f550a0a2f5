"""Bad input through the CLI: one sentence naming the file or field and the fix, exit code 2, no
traceback, and nothing left behind (no new artifact, the previous one untouched).

Each case prepares its own broken input from one healthy run folder (data + trained model +
trntk kernel on tiny params) and runs one `kernelscope` subcommand in process; a few run as a
real subprocess to check the exit code and the absence of a traceback end to end.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kernelscope.cli import main
from kernelscope.core.fileio import sha256_tree
from tests.support.cli import Payload, cli_args, edit_params, factory_source, healthy_weights, refused


@pytest.fixture
def run(tiny_run) -> Path:
    """A private copy of a run folder with data, model and the trntk kernel of digits2 (TINY_PARAMS), for one case
    to break."""
    return tiny_run(("data", "train", "kernel")).root


# ----------------------------------------------------------------------------------- params.yaml


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda raw: raw["kglm"].update(alpah=1e-3), ["kglm.alpah", "Extra inputs"]),  # unknown key
        (lambda raw: raw["kglm"].update(alpha="small"), ["kglm.alpha", "valid number"]),  # wrong type
        (lambda raw: raw["kglm"].update(alpha=-1.0), ["kglm.alpha", "greater than 0"]),  # out of range
        (lambda raw: raw["kernel"].update(chunk_size=0), ["kernel.chunk_size", "greater than or equal to 1"]),
        (lambda raw: raw["kernel"].update(chunk_size=10**7), ["kernel.chunk_size", "less than or equal to 65536"]),
        (lambda raw: raw["kernel"].update(projection_dim=0), ["kernel.projection_dim"]),
        (lambda raw: raw.update(datasets=["digits3"]), ["datasets", "'digits3'", "sources"]),
        (lambda raw: raw.update(sources={"mine": {"data": {"format": "npz"}}}), ["sources.mine.data.path"]),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "out-of-range",
        "chunk-zero",
        "chunk-huge",
        "projection-zero",
        "unknown-dataset",
        "source-no-path",
    ],
)
def test_params_mistakes_name_the_field(run, capsys, edit, fragments):
    before = sha256_tree(run / "out")
    edit_params(run, edit)
    refused(cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "params.yaml", *fragments)
    assert sha256_tree(run / "out") == before


def test_projection_larger_than_the_model_is_refused(run, capsys):
    edit_params(run, lambda raw: raw["kernel"].update(projection_dim=100_000))
    refused(cli_args(run, ["kernel", "--kind", "proj_trntk"]), capsys, "kernel.projection_dim", "parameters")
    assert not (run / "out" / "digits2" / "kernels" / "proj_trntk").exists()


def test_missing_params_file(tmp_path, capsys):
    refused(
        ["data", "--params", str(tmp_path / "nope.yaml"), "--dataset", "digits2", "--out", str(tmp_path)],
        capsys,
        "nope.yaml",
        "not found",
    )


# ----------------------------------------------------------------------------------- missing files


def test_missing_model_and_missing_data(run, capsys):
    shutil.rmtree(run / "out" / "digits2" / "model")
    refused(cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "model.json", "train a model first")
    shutil.rmtree(run / "out" / "digits2" / "data")
    refused(cli_args(run, ["train"]), capsys, "train.parquet", "run the data stage first")


# ----------------------------------------------------------------------------------- checkpoints


def test_truncated_checkpoint_is_refused_and_kernel_untouched(run, capsys):
    weights = run / "out" / "digits2" / "model" / "model.safetensors"
    kernel = run / "out" / "digits2" / "kernels" / "trntk"
    before = sha256_tree(kernel)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(cli_args(run, ["kernel", "--kind", "trntk"]), capsys, "model.safetensors", "does not match")
    assert sha256_tree(kernel) == before


def test_kernel_of_another_checkpoint_is_refused(run, capsys):
    """Provenance: a kernel computed for one model is not used with another."""
    # new split and new model; the kernel on disk is still the old model's
    edit_params(run, lambda raw: raw.update(seed=11))
    assert main(cli_args(run, ["data"])) == 0 and main(cli_args(run, ["train"])) == 0
    capsys.readouterr()
    refused(cli_args(run, ["kglm", "--no-track"]), capsys, "trntk", "hash")
    assert not (run / "out" / "digits2" / "kglm").exists()


# ----------------------------------------------------------------------------------- a user's model


@pytest.mark.parametrize(
    "case",
    ["truncated", "not-safetensors", "pickle-with-code", "wrong-architecture", "nan-weights", "not-a-tensor-dict"],
)
def test_users_weights_are_refused_without_running_code(run, capsys, case):
    model_dir = run / "out" / "blobs" / "model"
    marker = run / "pwned"
    if case == "truncated":
        weights = healthy_weights(run / "net.safetensors")
        weights.write_bytes(weights.read_bytes()[:100])
        fragments = ["net.safetensors", "truncated"]
    elif case == "not-safetensors":
        weights = run / "net.safetensors"
        weights.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 20)
        fragments = ["net.safetensors", "not safetensors"]
    elif case == "pickle-with-code":
        weights = run / "net.pt"
        weights.write_bytes(pickle.dumps({"0.weight": Payload(marker)}))
        fragments = ["net.pt", "refused"]
    elif case == "wrong-architecture":
        weights = healthy_weights(run / "net.safetensors", hidden=8)
        fragments = ["does not match", "shape of 0.weight: model (32, 16), file (8, 16)"]
    elif case == "nan-weights":
        from safetensors.torch import save_file

        from kernelscope.examples.byo import make_net

        state = make_net(16, 32, 4).state_dict()
        state["2.weight"][0, 0] = float("nan")
        save_file({k: v.contiguous() for k, v in state.items()}, str(run / "net.safetensors"))
        weights = run / "net.safetensors"
        fragments = ["non-finite", "2.weight"]
    else:
        weights = run / "net.pt"
        torch.save({"0.weight": [1, 2, 3]}, weights)
        fragments = ["net.pt"]
    factory_source(run, weights)
    refused(cli_args(run, ["train"], "blobs"), capsys, *fragments)
    assert not marker.exists(), "the crafted pickle ran its payload"
    assert not model_dir.exists()


def test_factory_mistakes_are_named(run, capsys):
    weights = healthy_weights(run / "net.safetensors")
    factory_source(run, weights)
    for factory, fragment in (
        ("kernelscope.examples.byo", "'package.module:function'"),
        ("kernelscope.no_such_module:f", "cannot be imported"),
        ("kernelscope.examples.byo:no_such", "has no attribute"),
    ):
        edit_params(run, lambda raw: raw["sources"]["blobs"]["model"].update(factory=factory))
        refused(cli_args(run, ["train"], "blobs"), capsys, fragment)
    edit_params(
        run,
        lambda raw: raw["sources"]["blobs"]["model"].update(
            factory="kernelscope.examples.byo:make_net", kwargs={"n_classes": 4, "widht": 3}
        ),
    )
    refused(cli_args(run, ["train"], "blobs"), capsys, "model.kwargs")
    edit_params(
        run,
        lambda raw: raw["sources"]["blobs"]["model"].update(kwargs={"in_features": 16, "hidden": 32, "n_classes": 3}),
    )
    refused(cli_args(run, ["train"], "blobs"), capsys, "does not match")


# ----------------------------------------------------------------------------------- a user's data


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("nan", ["blobs.npz", "NaN"]),
        ("inf", ["blobs.npz", "inf"]),
        ("labels-out-of-range", ["blobs.npz", "out of range"]),
        ("single-class", ["blobs.npz", "class"]),
        ("wrong-shapes", ["blobs.npz", "rows but"]),
        ("empty", ["blobs.npz", "empty"]),
        ("empty-test-split", ["blobs.npz", "test split is empty"]),
    ],
)
def test_users_data_is_validated_and_nothing_is_written(run, capsys, case, fragments):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), np.repeat([0, 1, 2], 20)
    extra: dict[str, np.ndarray] = {}
    data: dict = {"format": "npz", "path": str(run / "blobs.npz")}
    if case == "nan":
        x[7, 2] = np.nan
    elif case == "inf":
        x[3, 0] = np.inf
    elif case == "labels-out-of-range":
        y = y.copy()
        y[5] = 9
        data["n_classes"] = 3
    elif case == "single-class":
        y = np.zeros(60, dtype=np.int64)
    elif case == "wrong-shapes":
        y = y[:50]
    elif case == "empty":
        x, y = x[:0], y[:0]
    else:
        extra["split"] = np.array(["train"] * 60)
    np.savez(run / "blobs.npz", x=x, y=y, **extra)
    edit_params(run, lambda raw: raw.update(sources={"blobs": {"data": data}}, datasets=["blobs"]))
    err = refused(cli_args(run, ["data"], "blobs"), capsys, *fragments)
    assert err.count(".") >= 1 and len(err) < 400  # one sentence, not a dump
    assert not (run / "out" / "blobs").exists()


# ----------------------------------------------------------------------------------- end to end


def test_subprocess_exit_code_and_no_traceback(run):
    edit_params(run, lambda raw: raw["kglm"].update(alpha="small"))
    done = subprocess.run(
        [sys.executable, "-m", "kernelscope.cli", *cli_args(run, ["kglm", "--no-track"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "kglm.alpha" in done.stderr
