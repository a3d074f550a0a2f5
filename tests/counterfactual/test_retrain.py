"""The stacked retraining engine (autograd under Adam, the written-out SGD step otherwise) equals the
single-model trainer, model by model."""

import numpy as np
import pytest
import torch

from kernelscope.core.errors import ParamsError
from kernelscope.core.param_sections import TrainParams
from kernelscope.counterfactual.subsets import draw_subsets
from kernelscope.data.datasets import make_digits, restricted
from kernelscope.models.heads import correct_class_logit
from kernelscope.models.stacked_training import train_on_subsets
from kernelscope.models.train import predict_logits, train_classifier


@pytest.fixture(scope="module")
def digits():
    return make_digits("digits10", 0.3, 0)


@pytest.mark.parametrize(
    "section",
    [
        TrainParams(hidden=(12, 12), epochs=3, batch_size=16, lr=0.5),  # the paper's recipe, NTK parameterization
        TrainParams(hidden=(10,), epochs=2, optimizer="adam", lr=1e-2, parameterization="standard", batch_size=25),
        TrainParams(hidden=(10,), epochs=2, momentum=0.9, lr=0.05, batch_size=7),  # a last partial minibatch
        TrainParams(hidden=(10, 6), epochs=2, lr=0.1, parameterization="standard"),  # written-out SGD, scale 1
    ],
)
def test_stacked_models_equal_single_trainings(digits, section):
    masks = draw_subsets(len(digits.train.y), 3, 0.5, seed=1)
    rows = np.stack([np.flatnonzero(mask) for mask in masks])
    seeds = np.array([7, 8, 9])
    stack = train_on_subsets(digits, section, rows, seeds)
    margins = stack.margins(digits.test.x, digits.test.y)  # (3, n_test)
    for k in range(3):
        single = train_classifier(restricted(digits, masks[k]), section, int(seeds[k]), progress=False).model
        ours = stack.model(k).state_dict()
        for name, value in single.state_dict().items():
            assert torch.allclose(ours[name], value, rtol=0, atol=1e-5), name
        reference = correct_class_logit(predict_logits(single, digits.test.x), digits.test.y)
        assert np.allclose(margins[k], reference, atol=1e-4)


def test_binary_head_and_divergence(digits):
    two = make_digits("digits2", 0.3, 0)
    section = TrainParams(hidden=(8,), epochs=2)
    rows = np.stack([np.flatnonzero(m) for m in draw_subsets(len(two.train.y), 2, 0.5, seed=0)])
    stack = train_on_subsets(two, section, rows, np.array([1, 2]))
    single = train_classifier(
        restricted(two, np.isin(np.arange(len(two.train.y)), rows[1])), section, 2, progress=False
    )
    assert torch.allclose(stack.model(1)[0].weight, single.model[0].weight, atol=1e-5)
    rows10 = np.stack([np.flatnonzero(m) for m in draw_subsets(len(digits.train.y), 2, 0.5, seed=0)])
    with pytest.raises(ParamsError, match=r"model \d \(seed \d\).*train\.lr"):
        train_on_subsets(digits, TrainParams(hidden=(8,), epochs=2, lr=1e30), rows10, np.array([1, 2]))
