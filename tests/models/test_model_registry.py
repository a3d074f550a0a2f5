"""The MODELS registry (an architecture is selectable wherever one is chosen) and the output heads."""

import math

import numpy as np
import pytest
import torch

from kernelscope.core.errors import CheckpointError, ParamsError
from kernelscope.core.param_sections import CNNParams, TrainParams
from kernelscope.core.params import params_from_dict
from kernelscope.core.provenance import run_checkpoint, run_data
from kernelscope.data.datasets import make_digits
from kernelscope.models import heads
from kernelscope.models.zoo import MODELS, BasicBlock, architecture, build_model, model_entry


def test_resnet_chosen_by_train_arch_trains_end_to_end(tiny_run):
    made = tiny_run(
        ("data", "train"), train={"arch": "resnet"}, resnet={"widths": [4], "blocks": 1, "batch_size": 256, "epochs": 1}
    )  # 2 steps on digits2
    params, layout = made.params, made.layout
    ckpt = run_checkpoint(params, layout.model_dir, run_data(params, layout))  # verified against params' record
    assert ckpt.meta["architecture"] == {
        "name": "resnet",
        "image_shape": [1, 8, 8],
        "n_outputs": 1,
        "widths": [4],
        "blocks": 1,
    }
    assert ckpt.meta["hyperparameters"]["widths"] == [4]
    assert any(isinstance(m, BasicBlock) for m in ckpt.model.modules())
    assert math.isfinite(ckpt.meta["metrics"]["final_loss"])


def test_every_architecture_field_accepts_every_registry_model(tiny_params_dict):
    tiny_params_dict["table"] = {"archs": list(MODELS)}
    tiny_params_dict["train"]["arch"] = "resnet"
    params = params_from_dict(tiny_params_dict)
    assert params.table.archs == tuple(MODELS) and params.train.arch == "resnet"
    assert all(hasattr(params, entry.section) for entry in MODELS.values())


@pytest.mark.parametrize(
    "field, value, where",
    [("train", {"arch": "vit"}, "train.arch"), ("table", {"archs": ["mlp", "vit"]}, "table.archs.1")],
)
def test_an_unknown_architecture_is_refused_naming_the_field_and_the_registry(tiny_params_dict, field, value, where):
    tiny_params_dict[field] = {**tiny_params_dict.get(field, {}), **value}
    with pytest.raises(
        ParamsError,
        match=rf"field '{where}' is invalid \(Input should be 'mlp', 'cnn' or 'resnet' "
        r"\(kernelscope.models.zoo.MODELS\); got 'vit'\)",
    ):
        params_from_dict(tiny_params_dict)
    with pytest.raises(ParamsError, match=r"field 'train.arch' is 'vit', which is not an architecture of the registry"):
        model_entry("vit")
    with pytest.raises(CheckpointError, match=r"name 'vit' is unknown; expected one of 'mlp', 'cnn', 'resnet'"):
        build_model({"name": "vit"})


def test_registry_records_keep_the_keys_and_values_of_existing_checkpoints():
    """The records are the sidecars' ``architecture``: any change would refuse every existing checkpoint."""
    ds = make_digits("digits10", 0.3, 0)
    mlp = architecture(ds, TrainParams(hidden=(5, 3)))
    assert list(mlp.items()) == [
        ("name", "mlp"),
        ("input_dim", 64),
        ("hidden", [5, 3]),
        ("n_outputs", 10),
        ("parameterization", "ntk"),
    ]
    cnn = architecture(ds, CNNParams(channels=(4, 4), hidden=(8,)))
    assert list(cnn.items()) == [
        ("name", "cnn"),
        ("image_shape", [1, 8, 8]),
        ("n_outputs", 10),
        ("channels", [4, 4]),
        ("hidden", [8]),
        ("batch_norm", True),
    ]


# Hand-computed heads. Binary: one logit z per point, the log-odds of class 1.
Z = np.array([[2.0], [-1.0], [0.0]])
YB = np.array([1, 1, 0])
# Multiclass: three logits per point.
L = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
YM = np.array([2, 0])
E = math.e
LSE = math.log(E + E**2 + E**3)  # logsumexp of row 0 of L


def test_binary_head_by_hand():
    assert heads.n_outputs_for(2) == 1 and heads.accepted_outputs(2) == {1, 2}
    np.testing.assert_array_equal(heads.predictions(Z), [1, 0, 0])  # z = 0 is class 0
    assert heads.predictions(torch.from_numpy(Z)).tolist() == [1, 0, 0]
    np.testing.assert_allclose(heads.correct_class_logit(Z, YB), [2.0, -1.0, 0.0])
    s2, s1 = 1 / (1 + E**-2), 1 / (1 + E)  # sigmoid(2), sigmoid(-1)
    np.testing.assert_allclose(heads.probabilities(Z), [[1 - s2, s2], [1 - s1, s1], [0.5, 0.5]], rtol=1e-15)
    np.testing.assert_allclose(heads.probabilities(Z[0]), [1 - s2, s2], rtol=1e-15)  # one point's (C_out,) logits
    z, yb = torch.from_numpy(Z), torch.from_numpy(YB)
    np.testing.assert_allclose(heads.log_probs(z).numpy(), np.log([[1 - s2, s2], [1 - s1, s1], [0.5, 0.5]]), rtol=1e-12)
    nll = [math.log(1 + E**-2), math.log(1 + E), math.log(2)]  # −log p_y
    np.testing.assert_allclose(heads.per_sample_loss(z, yb).numpy(), nll, rtol=1e-12)
    assert heads.mean_loss(z, yb).item() == pytest.approx(sum(nll) / 3, rel=1e-12)


def test_multiclass_head_by_hand():
    assert heads.n_outputs_for(10) == 10 and heads.accepted_outputs(3) == {3}
    np.testing.assert_array_equal(heads.predictions(L), [2, 0])
    assert heads.predictions(torch.from_numpy(L)).tolist() == [2, 0]
    np.testing.assert_allclose(heads.correct_class_logit(L, YM), [3 - math.log(E + E**2), -math.log(2)], rtol=1e-12)
    p0 = [E / (E + E**2 + E**3), E**2 / (E + E**2 + E**3), E**3 / (E + E**2 + E**3)]
    np.testing.assert_allclose(heads.probabilities(L), [p0, [1 / 3] * 3], rtol=1e-12)
    logits, y = torch.from_numpy(L), torch.from_numpy(YM)
    np.testing.assert_allclose(heads.log_probs(logits).numpy(), np.log([p0, [1 / 3] * 3]), rtol=1e-12)
    nll = [LSE - 3, math.log(3)]
    np.testing.assert_allclose(heads.per_sample_loss(logits, y).numpy(), nll, rtol=1e-12)
    assert heads.mean_loss(logits, y).item() == pytest.approx(sum(nll) / 2, rel=1e-12)
