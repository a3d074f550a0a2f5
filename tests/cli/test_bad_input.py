"""Bad input through the CLI: one sentence naming the file or field and the fix, exit code 2, no
traceback, and nothing left behind (no new artifact, the previous one untouched).

Each case prepares its own broken input from one healthy run folder (data + trained model +
trntk kernel on tiny params) and runs one `kernelscope` subcommand in process; a few run as a
real subprocess to check the exit code and the absence of a traceback end to end.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_PARAMS
from kernelscope.cli import main
from kernelscope.core.fileio import sha256_tree


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """A run folder with data, model and the trntk kernel of digits2, plus the params that made it."""
    root = tmp_path_factory.mktemp("healthy")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    for command in (["data"], ["train"], ["kernel", "--kind", "trntk"]):
        assert main([*command, "--params", str(root / "params.yaml"), "--dataset", "digits2", "--out", str(root / "out"), "--quiet"]) == 0
    return root


@pytest.fixture
def run(healthy, tmp_path) -> Path:
    """A private copy of the healthy folder for one case to break."""
    shutil.copytree(healthy, tmp_path / "run")
    return tmp_path / "run"


def _refused(argv: list[str], capsys, *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"kernelscope {argv[0]}: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _params(run: Path, edit: Callable[[dict], None]) -> Path:
    raw = yaml.safe_load((run / "params.yaml").read_text())
    edit(raw)
    path = run / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _args(run: Path, command: list[str], dataset: str = "digits2") -> list[str]:
    return [*command, "--params", str(run / "params.yaml"), "--dataset", dataset, "--out", str(run / "out"), "--quiet"]


# ----------------------------------------------------------------------------------- params.yaml

@pytest.mark.parametrize("edit, fragments", [
    (lambda raw: raw["kglm"].update(alpah=1e-3), ["kglm.alpah", "Extra inputs"]),                  # unknown key
    (lambda raw: raw["kglm"].update(alpha="small"), ["kglm.alpha", "valid number"]),               # wrong type
    (lambda raw: raw["kglm"].update(alpha=-1.0), ["kglm.alpha", "greater than 0"]),                # out of range
    (lambda raw: raw["kernel"].update(chunk_size=0), ["kernel.chunk_size", "greater than or equal to 1"]),
    (lambda raw: raw["kernel"].update(chunk_size=10**7), ["kernel.chunk_size", "less than or equal to 65536"]),
    (lambda raw: raw["kernel"].update(projection_dim=0), ["kernel.projection_dim"]),
    (lambda raw: raw.update(datasets=["digits3"]), ["datasets", "'digits3'", "sources"]),
    (lambda raw: raw.update(sources={"mine": {"data": {"format": "npz"}}}), ["sources.mine.data.path"]),
], ids=["unknown-key", "wrong-type", "out-of-range", "chunk-zero", "chunk-huge", "projection-zero", "unknown-dataset", "source-no-path"])
def test_params_mistakes_name_the_field(run, capsys, edit, fragments):
    before = sha256_tree(run / "out")
    _params(run, edit)
    _refused(_args(run, ["kernel", "--kind", "trntk"]), capsys, "params.yaml", *fragments)
    assert sha256_tree(run / "out") == before


def test_projection_larger_than_the_model_is_refused(run, capsys):
    _params(run, lambda raw: raw["kernel"].update(projection_dim=100_000))
    _refused(_args(run, ["kernel", "--kind", "proj_trntk"]), capsys, "kernel.projection_dim", "parameters")
    assert not (run / "out" / "digits2" / "kernels" / "proj_trntk").exists()


def test_missing_params_file(tmp_path, capsys):
    _refused(["data", "--params", str(tmp_path / "nope.yaml"), "--dataset", "digits2", "--out", str(tmp_path)], capsys, "nope.yaml", "not found")


# ----------------------------------------------------------------------------------- missing files

def test_missing_model_and_missing_data(run, capsys):
    shutil.rmtree(run / "out" / "digits2" / "model")
    _refused(_args(run, ["kernel", "--kind", "trntk"]), capsys, "model.json", "train a model first")
    shutil.rmtree(run / "out" / "digits2" / "data")
    _refused(_args(run, ["train"]), capsys, "train.parquet", "run the data stage first")


# ----------------------------------------------------------------------------------- checkpoints

def test_truncated_checkpoint_is_refused_and_kernel_untouched(run, capsys):
    weights = run / "out" / "digits2" / "model" / "model.safetensors"
    kernel = run / "out" / "digits2" / "kernels" / "trntk"
    before = sha256_tree(kernel)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _refused(_args(run, ["kernel", "--kind", "trntk"]), capsys, "model.safetensors", "does not match")
    assert sha256_tree(kernel) == before


def test_kernel_of_another_checkpoint_is_refused(run, capsys):
    """Provenance: a kernel computed for one model is not used with another."""
    _params(run, lambda raw: raw.update(seed=11))  # new split and new model; the kernel on disk is still the old model's
    assert main(_args(run, ["data"])) == 0 and main(_args(run, ["train"])) == 0
    capsys.readouterr()
    _refused(_args(run, ["kglm", "--no-track"]), capsys, "trntk", "hash")
    assert not (run / "out" / "digits2" / "kglm").exists()


# ----------------------------------------------------------------------------------- a user's model

def _factory_source(run: Path, weights: Path, **model) -> None:
    from kernelscope.examples.byo import write_data

    write_data(run / "blobs.npz")
    spec = {"data": {"format": "npz", "path": str(run / "blobs.npz")},
            "model": {"factory": "kernelscope.examples.byo:make_net", "kwargs": {"in_features": 16, "hidden": 32, "n_classes": 4},
                      "weights": str(weights), **model}}
    _params(run, lambda raw: raw.update(sources={"blobs": spec}, datasets=["blobs"]))
    assert main(_args(run, ["data"], "blobs")) == 0


def _healthy_weights(path: Path, hidden: int = 32) -> Path:
    from safetensors.torch import save_file

    from kernelscope.examples.byo import make_net

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in make_net(16, hidden, 4).state_dict().items()}, str(path))
    return path


class _Payload:
    """Unpickling this runs os.system: the crafted pickle a weights loader must never execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["truncated", "not-safetensors", "pickle-with-code", "wrong-architecture", "nan-weights", "not-a-tensor-dict"])
def test_users_weights_are_refused_without_running_code(run, capsys, case):
    model_dir = run / "out" / "blobs" / "model"
    marker = run / "pwned"
    if case == "truncated":
        weights = _healthy_weights(run / "net.safetensors")
        weights.write_bytes(weights.read_bytes()[:100])
        fragments = ["net.safetensors", "truncated"]
    elif case == "not-safetensors":
        weights = run / "net.safetensors"
        weights.write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 20)
        fragments = ["net.safetensors", "not safetensors"]
    elif case == "pickle-with-code":
        weights = run / "net.pt"
        weights.write_bytes(pickle.dumps({"0.weight": _Payload(marker)}))
        fragments = ["net.pt", "refused"]
    elif case == "wrong-architecture":
        weights = _healthy_weights(run / "net.safetensors", hidden=8)
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
    _factory_source(run, weights)
    _refused(_args(run, ["train"], "blobs"), capsys, *fragments)
    assert not marker.exists(), "the crafted pickle ran its payload"
    assert not model_dir.exists()


def test_factory_mistakes_are_named(run, capsys):
    weights = _healthy_weights(run / "net.safetensors")
    _factory_source(run, weights)
    for factory, fragment in (("kernelscope.examples.byo", "'package.module:function'"), ("kernelscope.no_such_module:f", "cannot be imported"),
                              ("kernelscope.examples.byo:no_such", "has no attribute")):
        _params(run, lambda raw: raw["sources"]["blobs"]["model"].update(factory=factory))
        _refused(_args(run, ["train"], "blobs"), capsys, fragment)
    _params(run, lambda raw: raw["sources"]["blobs"]["model"].update(factory="kernelscope.examples.byo:make_net", kwargs={"n_classes": 4, "widht": 3}))
    _refused(_args(run, ["train"], "blobs"), capsys, "model.kwargs")
    _params(run, lambda raw: raw["sources"]["blobs"]["model"].update(kwargs={"in_features": 16, "hidden": 32, "n_classes": 3}))
    _refused(_args(run, ["train"], "blobs"), capsys, "does not match")


# ----------------------------------------------------------------------------------- a user's data

@pytest.mark.parametrize("case, fragments", [
    ("nan", ["blobs.npz", "NaN"]),
    ("inf", ["blobs.npz", "inf"]),
    ("labels-out-of-range", ["blobs.npz", "out of range"]),
    ("single-class", ["blobs.npz", "class"]),
    ("wrong-shapes", ["blobs.npz", "rows but"]),
    ("empty", ["blobs.npz", "empty"]),
    ("empty-test-split", ["blobs.npz", "test split is empty"]),
])
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
    _params(run, lambda raw: raw.update(sources={"blobs": {"data": data}}, datasets=["blobs"]))
    err = _refused(_args(run, ["data"], "blobs"), capsys, *fragments)
    assert err.count(".") >= 1 and len(err) < 400  # one sentence, not a dump
    assert not (run / "out" / "blobs").exists()


# ----------------------------------------------------------------------------------- end to end

def test_subprocess_exit_code_and_no_traceback(run):
    _params(run, lambda raw: raw["kglm"].update(alpha="small"))
    done = subprocess.run([sys.executable, "-m", "kernelscope.cli", *_args(run, ["kglm", "--no-track"])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "kglm.alpha" in done.stderr
