"""The traker package's CPU featurization (0.3.2) doing kernelscope's all-class work: its FunctionalGradientComputer
(vmap of per-sample gradients) of each class's logit, projected by its BasicProjector (Rademacher). The peer
baseline of benchmarks/kernels_bench.py and benchmarks/resnet_bench.py."""

from __future__ import annotations

import time

import numpy as np
import torch


def traker_features(model: torch.nn.Module, x: torch.Tensor, k: int, block_size: int) -> tuple[float, np.ndarray]:
    """(samples/s, features (n, C·K)) from traker's own gradient computer and projector, class by class.

    ``block_size``: rows of the projection generated at once; K holds the whole K × P matrix (traker's fastest),
    100 is its default (the blocks regenerated for every batch)."""
    from trak.gradient_computers import FunctionalGradientComputer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType
    from trak.utils import get_num_params

    class ClassLogit(AbstractModelOutput):
        """The model output F_c(x): the logit of the class passed in the label slot."""

        def __init__(self) -> None:
            super().__init__()

        @staticmethod
        def get_output(model, weights, buffers, image, label):
            logits = torch.func.functional_call(model, (weights, buffers), image.unsqueeze(0))[0]  # (C,)
            return (logits * (torch.arange(logits.shape[0]) == label)).sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):  # not used: no scoring here
            raise NotImplementedError

    grad_dim = get_num_params(model)
    computer = FunctionalGradientComputer(model, ClassLogit(), grad_dim, torch.float32, torch.device("cpu"))
    projector = BasicProjector(
        grad_dim, k, seed=0, proj_type=ProjectionType.rademacher, device="cpu", block_size=block_size
    )
    n_classes = int(model(x[:1]).shape[1])
    out = np.empty((len(x), n_classes, k))
    start = time.perf_counter()
    for rows in torch.arange(len(x)).split(64):
        for c in range(n_classes):
            grads = computer.compute_per_sample_grad((x[rows], torch.full((len(rows),), c)))
            flat = torch.cat([g.reshape(len(rows), -1) for g in grads.values()], dim=1)  # (b, P)
            out[rows, c] = projector.project(flat.detach(), model_id=0).double().numpy()
    return len(x) / (time.perf_counter() - start), out.reshape(len(x), -1)
