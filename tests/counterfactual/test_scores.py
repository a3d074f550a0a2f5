"""Each attributor's maths against a slow, explicit reference on a tiny model (per-sample autograd loops)."""

import numpy as np
import pytest
import torch

from kernelscope.counterfactual import scores
from kernelscope.counterfactual.gradients import margin_gradients
from kernelscope.kernels.projection import Projector
from kernelscope.models.heads import per_sample_loss
from kernelscope.models.zoo import build_mlp
from kernelscope.surrogate.kglm import KGLM


def tiny(n_outputs: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_mlp(4, [6], n_outputs).double().eval()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 4))
    y = rng.integers(0, max(n_outputs, 2), size=9)
    return model, x, y


def explicit_gradient(model, xi, yi, of: str) -> np.ndarray:
    """∇θ of one sample's margin log(p_y / (1 − p_y)) or loss, by autograd, flattened in parameter order."""
    z = model(torch.as_tensor(xi[None]))
    yt = torch.as_tensor([yi])
    if of == "loss":
        value = per_sample_loss(z, yt)[0]
    elif z.shape[1] == 1:
        value = z[0, 0] if yi == 1 else -z[0, 0]
    else:
        others = torch.cat([z[0, :yi], z[0, yi + 1 :]])
        value = z[0, yi] - torch.logsumexp(others, 0)
    grads = torch.autograd.grad(value, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_margin_gradients_and_the_loss_relation_match_autograd(n_outputs):
    model, x, y = tiny(n_outputs)
    got = margin_gradients(model, x, y)
    for i in range(len(x)):
        assert np.allclose(got.g[i], explicit_gradient(model, x[i], y[i], "margin"), atol=1e-10)
        # ∇ℓ = −(1 − p_y) ∇f
        assert np.allclose(-got.loss_scale[i] * got.g[i], explicit_gradient(model, x[i], y[i], "loss"), atol=1e-10)


def test_projected_gradients_preserve_inner_products():
    model, x, y = tiny(3)
    exact = margin_gradients(model, x, y).g
    projected = margin_gradients(model.float(), x.astype(np.float32), y, Projector(8192, seed=1)).g
    gram, approx = exact @ exact.T, projected @ projected.T
    assert np.abs(approx - gram).max() < 0.1 * np.abs(gram).max()


def test_grad_dot_and_grad_cos_are_minus_the_loss_gradient_products():
    model, x, y = tiny(3)
    g = margin_gradients(model, x, y)
    q, t = slice(0, 4), slice(4, 9)
    ref_dot = np.array(
        [
            [
                -explicit_gradient(model, x[a], y[a], "margin") @ explicit_gradient(model, x[b], y[b], "loss")
                for b in range(4, 9)
            ]
            for a in range(4)
        ]
    )
    assert np.allclose(scores.grad_dot(g.g[q], g.g[t], g.loss_scale[t]), ref_dot, atol=1e-10)
    lq, lt = (np.stack([explicit_gradient(model, x[i], y[i], "loss") for i in r]) for r in (range(4), range(4, 9)))
    gq = np.stack([explicit_gradient(model, x[i], y[i], "margin") for i in range(4)])
    ref_cos = (gq @ -lt.T) / np.outer(np.linalg.norm(gq, axis=1), np.linalg.norm(lt, axis=1))
    assert np.allclose(scores.grad_cos(g.g[q], g.g[t]), ref_cos, atol=1e-10)
    assert lq.shape == (4, gq.shape[1])


def test_tracin_is_the_sum_over_checkpoints_of_loss_gradient_products():
    checkpoints = [(0.5, *tiny(3, seed=0)), (0.25, *tiny(3, seed=1))]  # same data (seeded rng), other weights
    terms, reference = [], 0.0
    for lr, model, x, y in checkpoints:
        g = margin_gradients(model, x, y)
        terms.append((lr, g.g[:3], g.loss_scale[:3], g.g[3:], g.loss_scale[3:]))
        lq = np.stack([explicit_gradient(model, x[i], y[i], "loss") for i in range(3)])
        lt = np.stack([explicit_gradient(model, x[i], y[i], "loss") for i in range(3, 9)])
        reference = reference + lr * lq @ lt.T
    assert np.allclose(scores.tracin(terms), reference, atol=1e-10)


@pytest.mark.parametrize(("k", "n"), [(5, 12), (12, 5)])  # the primal (K ≤ N) and the dual (K > N) side
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_trak_matches_its_closed_form(k, n, ridge):
    rng = np.random.default_rng(k + n)
    phi, gx, q = rng.normal(size=(n, k)), rng.normal(size=(4, k)), rng.uniform(0.1, 0.9, size=n)
    lam = ridge * np.trace(phi.T @ phi) / k
    if ridge == 0 and k > n:
        reference = gx @ np.linalg.pinv(phi.T @ phi) @ phi.T @ np.diag(q)  # singular: the pseudo-inverse
    else:
        reference = gx @ np.linalg.solve(phi.T @ phi + lam * np.eye(k), phi.T) @ np.diag(q)
    assert np.allclose(scores.trak_one_model(gx, phi, q, ridge), reference, atol=1e-8)
    two = scores.trak([(gx, phi, q), (2 * gx, phi, q)], ridge)
    assert np.allclose(two, 1.5 * reference, atol=1e-8)  # TRAK-M: the mean over models


def test_kernel_and_kglm_attributions():
    kernel = np.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6]])
    y_train, y_query = np.array([0, 1, 1]), np.array([1, 0])
    signed = scores.label_signed_kernel(kernel, y_query, y_train)
    assert signed.tolist() == [[-0.5, -0.2, 0.1], [0.3, -0.4, 0.6]]
    multi = KGLM(weight=np.arange(6.0).reshape(2, 3), bias=np.array([0.3, -0.6]))
    got = scores.kglm_to_query_class(multi, kernel, y_query)
    assert np.allclose(got[0], multi.weight[1] * kernel[0] - 0.2) and np.allclose(
        got[1], multi.weight[0] * kernel[1] + 0.1
    )
    binary = KGLM(weight=np.array([[1.0, 2.0, 3.0]]), bias=np.array([0.6]))
    got = scores.kglm_to_query_class(binary, kernel, y_query)  # class 0 queries take the negative log-odds
    assert np.allclose(got[0], binary.weight[0] * kernel[0] + 0.2) and np.allclose(
        got[1], -(binary.weight[0] * kernel[1] + 0.2)
    )
    # rows sum to the query's class logit (Eq. 3 splits it over training points)
    assert got.sum(1) == pytest.approx([binary.logits(kernel)[0, 0], -binary.logits(kernel)[1, 0]])
