"""EK-FAC influence through kronfluence: sign, orientation and the NTK-parameterized layers checked against
exact gradients (kronfluence's identity strategy), and EK-FAC against the exact damped Gauss-Newton inverse."""

import gc
import weakref

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from kernelscope.counterfactual.ekfac import frozen_heap, influence_scores, plain_linear_copy
from kernelscope.counterfactual.gradients import margin_gradients
from kernelscope.kernels.jacobians import jacobian_rows
from kernelscope.models.zoo import build_mlp


def _problem(n_outputs: int, n: int = 60, seed: int = 0):
    torch.manual_seed(seed)
    model = build_mlp(5, [7], n_outputs, "ntk").double()
    rng = np.random.default_rng(seed)
    classes = max(n_outputs, 2)
    x, xq = rng.normal(size=(n, 5)), rng.normal(size=(6, 5))
    return model, x, rng.integers(0, classes, n), xq, rng.integers(0, classes, 6)


@pytest.mark.parametrize("n_outputs", [3, 1])
def test_identity_strategy_is_minus_the_margin_gradient_dot_the_loss_gradient(n_outputs):
    model, x, y, xq, yq = _problem(n_outputs)
    x_in = torch.as_tensor(x[:4])
    assert torch.allclose(plain_linear_copy(model)(x_in), model(x_in))  # the copy is the same function
    scores = influence_scores(model, x, y, xq, yq, seed=0, strategy="identity")
    gq, gt = margin_gradients(model, xq, yq), margin_gradients(model, x, y)
    reference = (gq.g @ gt.g.T) * gt.loss_scale[None, :]  # −⟨∇f(x), ∇ℓ(x_j)⟩, ∇ℓ = −(1 − p) ∇f
    assert scores.shape == (6, 60)
    np.testing.assert_allclose(scores, reference, atol=1e-5 * np.abs(reference).max())


def _exact_influence(model, x, y, xq, yq, damping, per_layer):
    """−∇f(x)ᵀ (G + λI)⁻¹ ∇ℓ(x_j) with G the exact Gauss-Newton (= Fisher) of the mean softmax loss; with
    ``per_layer`` only its diagonal blocks of each layer's (weight, bias): what EK-FAC approximates."""
    J = jacobian_rows(model, torch.as_tensor(x)).double().numpy()  # (N, C, P)
    with torch.no_grad():
        p = torch.softmax(model(torch.as_tensor(x)), 1).numpy()  # (N, C)
    out_hessian = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])  # (N, C, C)
    G = np.einsum("ncp,ncd,ndq->pq", J, out_hessian, J) / len(x)  # (P, P)
    if per_layer:
        ends = np.cumsum([0, *(p.numel() for p in model.parameters())])[::2]  # (weight, bias) per layer
        mask = np.zeros_like(G, dtype=bool)
        for start, stop in zip(ends[:-1], ends[1:]):
            mask[start:stop, start:stop] = True
        G = np.where(mask, G, 0.0)
    dl_dz = p.copy()
    dl_dz[np.arange(len(y)), y] -= 1
    grad_loss = np.einsum("ncp,nc->np", J, dl_dz)  # (N, P)
    grad_f = margin_gradients(model, xq, yq).g  # (n, P)
    damping *= float(np.trace(G)) / len(G)  # relative to the mean eigenvalue
    return -grad_f @ np.linalg.solve(G + damping * np.eye(len(G)), grad_loss.T), damping


def test_ekfac_ranks_training_points_as_the_exact_damped_inverse_does():
    model, x, y, xq, yq = _problem(3, n=300)
    blocks, damping = _exact_influence(model, x, y, xq, yq, 1.0, per_layer=True)
    full, _ = _exact_influence(model, x, y, xq, yq, 1.0, per_layer=False)
    scores = influence_scores(model, x, y, xq, yq, seed=0, damping=damping)

    def rho(reference):
        return [spearmanr(scores[i], reference[i])[0] for i in range(len(xq))]

    assert np.mean(rho(blocks)) > 0.95 and min(rho(blocks)) > 0.9
    assert np.mean(rho(full)) > 0.8  # the cross-layer blocks EK-FAC leaves out cost some agreement
    before = torch.random.get_rng_state()
    again = influence_scores(model, x, y, xq, yq, seed=0, damping=damping)
    assert np.array_equal(again, scores)  # the sampled Fisher labels are seeded
    assert torch.equal(torch.random.get_rng_state(), before)  # from a generator of its own: threads may share


class _Node:
    pass


def test_frozen_heap_keeps_older_garbage_until_the_last_context_exits():
    assert gc.get_freeze_count() == 0
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    alive = weakref.ref(a)
    with frozen_heap():
        with frozen_heap():  # nested (two EK-FAC tasks side by side): still frozen after the inner exit
            pass
        del a, b
        gc.collect()
        assert alive() is not None and gc.get_freeze_count() > 0
        fresh = _Node()
        fresh.self = fresh
        fresh_alive = weakref.ref(fresh)
        del fresh
        gc.collect()
        assert fresh_alive() is None  # what is allocated inside is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None
