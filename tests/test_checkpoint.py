import json

import pytest
import torch

from kernelscope.checkpoint import load_checkpoint, save_checkpoint
from kernelscope.errors import CheckpointError
from kernelscope.fileio import sha256_file
from kernelscope.models import build_mlp

ARCH = {"name": "mlp", "input_dim": 4, "hidden": [5, 3], "n_outputs": 2, "parameterization": "ntk"}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_mlp(4, [5, 3], 2, "ntk")
    meta = save_checkpoint(model, tmp_path, arch=ARCH, hyperparameters={"lr": 0.1}, dataset_name="toy",
                           dataset_hash="d" * 64, metrics={"test_accuracy": 0.5}, seed=0)
    return model, meta, tmp_path


def test_round_trip_is_exact(saved):
    model, meta, path = saved
    loaded = load_checkpoint(path, expected_dataset_hash="d" * 64)
    x = torch.randn(6, 4)
    assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.checkpoint_hash == meta["weights_sha256"] == sha256_file(path / "model.safetensors")
    assert loaded.meta["architecture"] == ARCH and loaded.meta["dataset"]["name"] == "toy"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"model\.json: checkpoint sidecar not found"):
        load_checkpoint(tmp_path)


def test_missing_weights(saved):
    _, _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights file not found"):
        load_checkpoint(path)


def test_tampered_weights(saved):
    _, _, path = saved
    blob = bytearray((path / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match 'weights_sha256'"):
        load_checkpoint(path)


def test_corrupt_safetensors_with_consistent_hash(saved):
    _, _, path = saved
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    meta = json.loads((path / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(path / "model.safetensors")
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_architecture_mismatch_names_the_tensor(saved):
    _, _, path = saved
    meta = json.loads((path / "model.json").read_text())
    meta["architecture"]["hidden"] = [5, 4]
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"tensor '2\.weight' has shape \(3, 5\)"):
        load_checkpoint(path)


def test_dataset_mismatch(saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="dataset.hash"):
        load_checkpoint(path, expected_dataset_hash="e" * 64)


def test_sidecar_not_json_or_wrong_format(saved):
    _, _, path = saved
    (path / "model.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    (path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="field 'format'"):
        load_checkpoint(path)
