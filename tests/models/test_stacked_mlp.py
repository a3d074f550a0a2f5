"""The MLP's written-out SGD step against autograd and torch.optim.SGD, the slow obvious reference."""

import copy

import pytest
import torch

from kernelscope.models import stacked_mlp
from kernelscope.models.heads import mean_loss
from kernelscope.models.zoo import build_mlp


@pytest.mark.parametrize(
    ("outputs", "parameterization", "momentum"),
    [(3, "ntk", 0.0), (1, "ntk", 0.9), (4, "standard", 0.5)],  # softmax and sigmoid heads, scales 1/sqrt(fan-in) and 1
)
def test_written_out_steps_equal_autograd_steps(outputs, parameterization, momentum):
    generator = torch.Generator().manual_seed(0)
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(build_mlp(5, [7, 6], outputs, parameterization))
    references = [copy.deepcopy(model) for model in models]
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.3, momentum=momentum) for model in references]
    stacked = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        for name, _ in models[0].named_parameters()
    }  # (2, *shape)
    sgd = stacked_mlp.StackedSGD(models[0], stacked, lr=0.3, momentum=momentum)
    classes = max(outputs, 2)
    for _ in range(4):
        x = torch.randn(2, 9, 5, generator=generator)  # (models, batch, in)
        y = torch.randint(0, classes, (2, 9), generator=generator)
        losses = sgd.step(x, y, with_loss=True)
        for k, (model, optimizer) in enumerate(zip(references, optimizers)):
            optimizer.zero_grad()
            loss = mean_loss(model(x[k]), y[k])
            loss.backward()
            optimizer.step()
            assert torch.allclose(losses[k], loss.detach(), atol=1e-6)
    for k, model in enumerate(references):
        for name, value in model.named_parameters():
            assert torch.allclose(stacked[name][k], value.detach(), rtol=0, atol=1e-6), name
            assert not torch.equal(stacked[name][k], dict(models[k].named_parameters())[name]), "no step was taken"
