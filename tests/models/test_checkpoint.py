import json

import pytest
import torch

from kernelscope.core.errors import CheckpointError
from kernelscope.core.fileio import sha256_file
from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.models.checkpoint import MAX_PARAMETERS, ModelSpec, load_checkpoint, save_checkpoint
from kernelscope.models.zoo import build_mlp, build_model

ARCH = {"name": "mlp", "input_dim": 4, "hidden": [5, 3], "n_outputs": 2, "parameterization": "ntk"}


def spec(arch: dict = ARCH, dataset_hash: str = "d" * 64, **changes) -> ModelSpec:
    fields = dict(
        architecture=arch,
        hyperparameters={"lr": 0.1},
        seed=0,
        dataset_hash=dataset_hash,
        build=lambda: build_model(arch),
    )
    return ModelSpec(**{**fields, **changes})


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_mlp(4, [5, 3], 2, "ntk")
    meta = save_checkpoint(model, tmp_path, spec(), dataset_name="toy", metrics={"test_accuracy": 0.5})
    return model, meta, tmp_path


def _edit_sidecar(path, edit, rehash: bool = True) -> None:
    """Edit model.json; with ``rehash`` the content hash is recomputed, as an informed attacker would."""
    meta = json.loads((path / "model.json").read_text())
    meta.pop("kernelscope", None)
    edit(meta)
    if rehash:
        write_json_artifact(path / "model.json", meta, "checkpoint-sidecar")
    else:
        (path / "model.json").write_text(json.dumps(meta))


def test_round_trip_is_exact(saved):
    model, meta, path = saved
    loaded = load_checkpoint(path, spec())
    x = torch.randn(6, 4)
    assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.checkpoint_hash == meta["weights_sha256"] == sha256_file(path / "model.safetensors")
    assert loaded.meta["architecture"] == ARCH and loaded.meta["dataset"]["name"] == "toy"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"model\.json: checkpoint sidecar not found"):
        load_checkpoint(tmp_path, spec())


def test_missing_weights(saved):
    _, _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights file not found"):
        load_checkpoint(path, spec())


def test_tampered_weights(saved):
    _, _, path = saved
    blob = bytearray((path / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match 'weights_sha256'"):
        load_checkpoint(path, spec())


def test_corrupt_safetensors_with_consistent_hash(saved):
    _, _, path = saved
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    _edit_sidecar(path, lambda m: m.update(weights_sha256=sha256_file(path / "model.safetensors")))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path, spec())


def test_architecture_in_the_sidecar_never_decides_the_model(saved):
    """A sidecar naming another architecture (even with a recomputed hash) is refused against params."""
    _, _, path = saved
    _edit_sidecar(path, lambda m: m["architecture"].update(hidden=[5, 4]))
    with pytest.raises(CheckpointError, match=r"field 'architecture' is .*\[5,4\].* but params ask for .*\[5,3\]"):
        load_checkpoint(path, spec())


def test_sidecar_factory_is_never_imported(saved, tmp_path):
    """The attack of the integrity issue: a sidecar that names os:system as a factory runs nothing."""
    _, _, path = saved
    marker = tmp_path / "PWNED"
    attack = {"name": "factory", "factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    for rehash in (False, True):
        _edit_sidecar(path, lambda m: m.update(architecture=attack), rehash=rehash)
        with pytest.raises(CheckpointError, match="model.json"):
            load_checkpoint(path, spec())
        assert not marker.exists()


def test_params_that_ask_for_a_huge_model_are_refused_before_allocating(saved):
    _, _, path = saved
    huge = {**ARCH, "hidden": [65536, 65536, 65536]}
    _edit_sidecar(path, lambda m: m.update(architecture=huge))
    with pytest.raises(CheckpointError, match="parameters, more than the limit"):
        load_checkpoint(path, spec(huge))
    assert MAX_PARAMETERS == 1 << 30


def test_hyperparameters_and_seed_must_match(saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="field 'hyperparameters'"):
        load_checkpoint(path, spec(hyperparameters={"lr": 0.2}))
    with pytest.raises(CheckpointError, match="field 'seed' is 0 but params ask for 4"):
        load_checkpoint(path, spec(seed=4))


def test_dataset_mismatch(saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="dataset.hash"):
        load_checkpoint(path, spec(dataset_hash="e" * 64))


def test_sidecar_not_json_or_wrong_format(saved):
    _, _, path = saved
    (path / "model.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path, spec())
    write_json_artifact(path / "model.json", {"format": "other"}, "checkpoint-sidecar")
    with pytest.raises(CheckpointError, match="field 'format'"):
        load_checkpoint(path, spec())
    (path / "model.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path, spec())


def test_integer_weights_for_a_float_model_are_refused(saved):
    """Weights whose dtype class changed (int32 for float32) are not cast silently, whatever the hashes say."""
    from kernelscope.core.tensor_artifacts import write_safetensors

    model, _, path = saved
    state = {k: v.to(torch.int32) for k, v in model.state_dict().items()}
    write_safetensors(
        path / "model.safetensors", state, "checkpoint-weights", {"architecture": ARCH, "dataset_hash": "d" * 64}
    )
    _edit_sidecar(path, lambda m: m.update(weights_sha256=sha256_file(path / "model.safetensors")))
    with pytest.raises(CheckpointError, match="is torch.int32 but the model's is torch.float32"):
        load_checkpoint(path, spec())


def test_same_model_same_bytes(saved, tmp_path):
    """A checkpoint's file hash is its identity: saving the same model again gives the same bytes
    (metadata order included)."""
    model, meta, path = saved
    for i in range(4):
        again = save_checkpoint(
            model, tmp_path / f"again{i}", spec(), dataset_name="toy", metrics={"test_accuracy": 0.5}
        )
        assert again["weights_sha256"] == meta["weights_sha256"]
        assert (tmp_path / f"again{i}" / "model.json").read_bytes() == (path / "model.json").read_bytes()


def test_batch_norm_checkpoint_round_trips(tmp_path):
    """0-d tensors (BatchNorm's num_batches_tracked) keep their shape through the artifact format."""
    arch = {
        "name": "cnn",
        "image_shape": [1, 8, 8],
        "n_outputs": 3,
        "channels": [4, 4],
        "hidden": [8],
        "batch_norm": True,
    }
    torch.manual_seed(0)
    model = build_model(arch)
    model.train()(torch.randn(5, 64))  # move the running statistics and the batch counter
    save_checkpoint(model, tmp_path, spec(arch), dataset_name="toy", metrics={})
    loaded = load_checkpoint(tmp_path, spec(arch)).model
    for name, tensor in model.state_dict().items():
        assert loaded.state_dict()[name].shape == tensor.shape and torch.equal(loaded.state_dict()[name], tensor), name


def test_loading_waits_for_a_seeded_construction_and_leaves_the_global_rng_alone(saved):
    """A checkpoint's model is built (then overwritten) from torch's global RNG: loading must neither move that RNG
    nor draw from it while another thread constructs a seeded model (the counterfactual flow loads checkpoints
    beside retraining), or that model's initialization would depend on timing."""
    import threading

    from kernelscope.models.zoo import model_construction

    _, _, path = saved
    before = torch.random.get_rng_state()
    load_checkpoint(path, spec())
    assert torch.equal(torch.random.get_rng_state(), before)

    with model_construction(seed=7):  # another thread's seeded construction is in progress ...
        first = torch.rand(3)
        loader = threading.Thread(target=load_checkpoint, args=(path, spec()))
        loader.start()
        loader.join(timeout=0.5)
        assert loader.is_alive()  # ... so the load waits for it
        second = torch.rand(3)
    loader.join(timeout=30)
    torch.manual_seed(7)
    assert torch.equal(torch.cat([first, second]), torch.rand(6))  # the seeded stream was not interleaved
