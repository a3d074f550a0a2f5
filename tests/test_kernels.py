"""Exact trNTK / trNTK0 against a slow reference that loops over samples and classes."""

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.errors import KernelscopeError
from kernelscope.kernels import compute_kernel
from kernelscope.models import build_mlp


def reference_trntk0(model: nn.Module, xq: torch.Tensor, xt: torch.Tensor) -> np.ndarray:
    """Σ_c ⟨g_c(x), g_c(x')⟩ with every g_c(x) materialized by plain autograd, one sample and class at a time."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i in range(len(x)):
            logits = model(x[i : i + 1])[0]
            per_class = []
            for c in range(logits.shape[0]):
                g = torch.autograd.grad(logits[c], params, retain_graph=True)
                per_class.append(torch.cat([t.reshape(-1) for t in g]))
            out.append(per_class)
        return out

    gq, gt = grads(xq), grads(xt)
    k = np.zeros((len(xq), len(xt)))
    for i, gi in enumerate(gq):
        for j, gj in enumerate(gt):
            k[i, j] = sum(float(torch.dot(a, b)) for a, b in zip(gi, gj))
    return k


def reference_trntk(model, xq, xt) -> np.ndarray:
    k0 = reference_trntk0(model, xq, xt)
    dq = np.diag(reference_trntk0(model, xq, xq))
    dt = np.diag(reference_trntk0(model, xt, xt))
    return k0 / np.sqrt(np.outer(dq, dt))


def small_models(n_out: int):
    torch.manual_seed(0)
    yield "ntk-mlp", build_mlp(5, [7, 6], n_out, "ntk").double()
    torch.manual_seed(1)
    yield "tanh-mlp", nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, n_out)).double()


@pytest.mark.parametrize("n_out", [1, 3])
def test_trntk_matches_reference(n_out):
    gen = torch.Generator().manual_seed(42)
    xq = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    xt = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    for name, model in small_models(n_out):
        ref0 = reference_trntk0(model, xq, xt)
        got0 = compute_kernel(model, xq, xt, kind="trntk0", chunk_size=4)
        assert got0.shape == (6, 9)
        np.testing.assert_allclose(got0, ref0, rtol=1e-6, atol=0, err_msg=name)
        got = compute_kernel(model, xq, xt, kind="trntk", chunk_size=4)
        np.testing.assert_allclose(got, reference_trntk(model, xq, xt), rtol=1e-6, atol=0, err_msg=name)


@pytest.mark.parametrize("n_out", [1, 4])
def test_train_by_train_is_symmetric_with_unit_diagonal(n_out):
    torch.manual_seed(3)
    model = build_mlp(4, [6], n_out, "ntk").double()
    x = torch.randn(11, 4, dtype=torch.float64)
    k = compute_kernel(model, x, kind="trntk", chunk_size=3)
    np.testing.assert_allclose(k, k.T, rtol=1e-12)
    np.testing.assert_allclose(np.diag(k), 1.0, rtol=1e-12)
    np.testing.assert_allclose(compute_kernel(model, x, kind="trntk0"), reference_trntk0(model, x, x), rtol=1e-6)


def test_chunking_and_memory_budget_do_not_change_the_kernel():
    torch.manual_seed(5)
    model = build_mlp(4, [6, 5], 3, "ntk").double()
    xq, xt = torch.randn(7, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    cached = compute_kernel(model, xq, xt, kind="trntk0", chunk_size=100, memory_budget_mb=1024)
    blockwise = compute_kernel(model, xq, xt, kind="trntk0", chunk_size=3, memory_budget_mb=0)  # recompute every block
    np.testing.assert_allclose(blockwise, cached, rtol=1e-12)


def test_float32_inputs_and_arrays_are_accepted():
    torch.manual_seed(0)
    model = build_mlp(4, [6], 2, "ntk")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    k = compute_kernel(model, x, kind="trntk")
    assert k.shape == (5, 5) and np.allclose(np.diag(k), 1.0, atol=1e-5)


def test_kernel_leaves_model_mode_and_refuses_wrong_dtype():
    model = build_mlp(4, [6], 2, "ntk")
    model.train()
    compute_kernel(model, torch.randn(3, 4), kind="trntk")
    assert model.training
    with pytest.raises(KernelscopeError, match="dtype"):
        compute_kernel(model, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(KernelscopeError, match="unknown"):
        compute_kernel(model, torch.randn(3, 4), kind="nope")
