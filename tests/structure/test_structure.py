"""Structure probes against hand-built networks and numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.models.zoo import build_mlp
from kernelscope.structure.degeneracy import (
    activation_gram,
    firing_groups,
    gradient_gram,
    gram_spectrum,
    relu_activations,
)
from kernelscope.structure.interaction import (
    ablation_curve,
    activation_moments,
    directions_needed,
    interaction_bases,
    pca_basis,
)
from kernelscope.structure.layers import jacobians
from kernelscope.structure.reparameterize import coordinate_check, linear_change, neuron_measures, permute, scale
from kernelscope.structure.spectra import layer_spectra, numerical_rank, participation_ratio, rank_to_mass


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _weights(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()


def _low_rank_net(seed: int = 0) -> nn.Sequential:
    """input 12 → Linear 10 → Linear 8 of rank 3 → ReLU → Linear 4; layer '0' to '1' has Jacobian W1 of rank 3."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 10), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)).double().eval()
    with torch.no_grad():
        net[1].weight.copy_(
            torch.randn(8, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 10, generator=g, dtype=torch.float64)
        )
    return net


def test_effective_rank_measures_by_hand():
    s = np.array([4.0, 2.0, 2.0, 0.0])
    assert numerical_rank(s, 1e-6) == 3
    assert rank_to_mass(s, 0.99) == 3  # 16, 4, 4 of 24: 16/24 < 0.99, 20/24 < 0.99, 24/24
    assert rank_to_mass(s, 0.6) == 1  # 16/24 = 0.667
    assert participation_ratio(s) == pytest.approx(24.0**2 / (256 + 16 + 16))
    assert numerical_rank(np.zeros(3), 1e-6) == 0 and participation_ratio(np.zeros(3)) == 0.0


def test_low_rank_jacobian_rank_recovered_exactly():
    net = _low_rank_net()
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    linear_pair, masked_pair = layer_spectra(net, x, ["0", "1", "2"], chunk_size=16, rtol=1e-8, mass=0.99)
    # '0' → '1' is the rank-3 matrix W1 at every point, and so is its stack.
    assert linear_pair.summary["rank_per_point_min"] == linear_pair.summary["rank_per_point_max"] == 3
    assert linear_pair.summary["rank_stacked"] == 3
    w1 = net[1].weight.detach().numpy()
    np.testing.assert_allclose(linear_pair.per_point[0], np.linalg.svd(w1, compute_uv=False), rtol=1e-9, atol=1e-12)
    # '1' → '2' is diag(ReLU mask) at each point: rank = active neurons; stacked over points, every neuron that
    # fires once.
    pre = net[1](net[0](x)).detach().numpy()
    active = (pre > 0).sum(1)
    ranks = [numerical_rank(s, 1e-8) for s in masked_pair.per_point]
    assert ranks == active.tolist()
    assert masked_pair.summary["rank_stacked"] == int(((pre > 0).any(0)).sum())


def test_jacobians_match_autograd_per_point():
    net = _low_rank_net(2)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jac = jacobians(net, x, "input", "output")
    for i in range(5):
        ref = torch.autograd.functional.jacobian(lambda z: net(z[None])[0], x[i])
        torch.testing.assert_close(jac[i], ref)


def _random_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_mlp(6, [20, 20], 3, "ntk").double().eval()


def _linear_hidden_net(seed: int) -> nn.Module:
    """Layer '0' has no nonlinearity: its coordinates can be changed by any invertible matrix."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)).double().eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_reparameterizations_keep_function_and_rank_but_move_neuron_measures(seed):
    rng = np.random.default_rng(seed)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    net = _random_mlp(seed)
    layers = ["input", "1", "3", "output"]
    variants = {
        "permutation": permute(net, "1", rng.permutation(20)),
        "scaling": scale(scale(net, "1", np.exp(rng.uniform(-1, 1, 20))), "3", np.exp(rng.uniform(-1, 1, 20))),
    }
    base = layer_spectra(net, x, layers, chunk_size=32, rtol=1e-9, mass=0.99)
    for name, new in variants.items():
        torch.testing.assert_close(new(x), net(x))
        after = layer_spectra(new, x, layers, chunk_size=32, rtol=1e-9, mass=0.99)
        for b, a in zip(base, after):
            assert [numerical_rank(s, 1e-9) for s in a.per_point] == [numerical_rank(s, 1e-9) for s in b.per_point]
            assert a.summary["rank_stacked"] == b.summary["rank_stacked"]
    # Permutations are orthogonal: the whole spectrum stays; scalings reshape it (not coordinate-free).
    perm_after = layer_spectra(variants["permutation"], x, layers, chunk_size=32, rtol=1e-9, mass=0.99)
    scale_after = layer_spectra(variants["scaling"], x, layers, chunk_size=32, rtol=1e-9, mass=0.99)
    np.testing.assert_allclose(perm_after[1].stacked, base[1].stacked, rtol=1e-9, atol=1e-12 * base[1].stacked[0])
    assert not np.allclose(scale_after[1].stacked, base[1].stacked, rtol=1e-3)
    # Neuron-basis measures move: per-neuron activity is reordered by the permutation, weight norms rescaled by scaling.
    before = neuron_measures(net, x, "1")
    assert not np.allclose(
        neuron_measures(variants["permutation"], x, "1")["fraction_active"], before["fraction_active"]
    )
    assert not np.allclose(neuron_measures(variants["scaling"], x, "1")["incoming_norm"], before["incoming_norm"])


def test_invertible_change_of_a_linear_layer():
    rng = np.random.default_rng(4)
    x = torch.randn(48, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    net = _linear_hidden_net(4)
    a = rng.standard_normal((12, 12)) + 3 * np.eye(12)
    new = linear_change(net, "0", a)
    torch.testing.assert_close(new(x), net(x))
    layers = ["input", "0", "2", "output"]
    for b, after in zip(
        layer_spectra(net, x, layers, chunk_size=16, rtol=1e-9, mass=0.99),
        layer_spectra(new, x, layers, chunk_size=16, rtol=1e-9, mass=0.99),
    ):
        assert after.summary["rank_stacked"] == b.summary["rank_stacked"]
        assert after.summary["rank_per_point_mean"] == b.summary["rank_per_point_mean"]
    assert not np.allclose(
        neuron_measures(new, x, "0")["hoyer_sparsity"], neuron_measures(net, x, "0")["hoyer_sparsity"]
    )
    # The interaction basis whitens first, so its importance spectrum does not see the change either.
    lib_old = interaction_bases(net, x, layers, chunk_size=16, rtol=1e-10)["0"].importance
    lib_new = interaction_bases(new, x, layers, chunk_size=16, rtol=1e-10)["0"].importance
    np.testing.assert_allclose(lib_new, lib_old, rtol=1e-6, atol=1e-10 * lib_old.max())


def test_reparameterizations_refuse_what_would_change_the_function():
    net = _random_mlp(0)
    with pytest.raises(KernelscopeError, match="ReLU output"):
        linear_change(net, "1", np.eye(20))
    with pytest.raises(KernelscopeError, match="positive"):
        scale(net, "1", -np.ones(20))
    with pytest.raises(KernelscopeError, match="only such layers"):
        permute(net, "0", np.arange(20))  # a pre-activation read by a ReLU, not by a linear map


def test_coordinate_check_report_on_random_networks():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for net, layers, transforms in (
        (_random_mlp(5), ["input", "1", "3", "output"], {"permutation", "scaling"}),
        (_linear_hidden_net(5), ["input", "0", "2", "output"], {"permutation", "scaling", "invertible_linear"}),
    ):
        report = coordinate_check(net, x, layers, seed=0, chunk_size=16, rtol=1e-9, mass=0.99)
        assert set(report["output_relative_change"]) == transforms
        assert max(report["output_relative_change"].values()) < 1e-10
        assert report["coordinate_free_kept"]
        free = [r for r in report["rows"] if r["kind"] == "coordinate-free"]
        assert not any(r["changed"] for r in free)  # well-separated spectra: the rank does not move at all
        assert {"incoming_norm", "outgoing_norm", "mean_abs_activation"} <= set(report["neuron_basis_changed"])
        perm_shape = [r for r in report["rows"] if r["transform"] == "permutation" and r["kind"] == "spectral shape"]
        assert perm_shape and not any(r["changed"] for r in perm_shape)


def _two_layer_numpy(net: nn.Sequential, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1 = _weights(net[0])
    pre = x @ w1.T + b1
    return pre, _relu(pre)


def test_activation_and_gradient_grams_against_numpy():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double().eval()
    x = torch.randn(30, 5, dtype=torch.float64)
    xn = x.numpy()
    pre, h = _two_layer_numpy(net, xn)
    np.testing.assert_allclose(activation_gram(net, x, "1", chunk_size=8), h.T @ h / 30, rtol=1e-12)
    np.testing.assert_allclose(
        gram_spectrum(activation_gram(net, x, "1", 8)),
        np.sort(np.linalg.eigvalsh(h.T @ h / 30))[::-1].clip(0),
        rtol=1e-9,
        atol=1e-12,
    )
    w1, _ = _weights(net[0])
    w2, _ = _weights(net[2])
    # Gradients of the logits with respect to the ReLU output: W2 at every point.
    np.testing.assert_allclose(gradient_gram(net, x, "1", chunk_size=8), w2.T @ w2, rtol=1e-12)
    # With respect to the input: W2 diag(mask) W1 at each point.
    expected = np.zeros((5, 5))
    for i in range(30):
        j = w2 @ np.diag((pre[i] > 0).astype(float)) @ w1
        expected += j.T @ j / 30
    np.testing.assert_allclose(gradient_gram(net, x, "input", chunk_size=8), expected, rtol=1e-10)


def test_synchronized_relus_found_on_a_hand_built_network():
    # Neurons: 0 and 1 fire when x0 > 0 (weights 1 and 2), 2 and 3 when x1 > 0.5, 4 never, 5 always,
    # 6 alone (x0 > 0 and … via x0 + x1).
    net = nn.Sequential(nn.Linear(2, 7), nn.ReLU()).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1, 0], [2, 0], [0, 1], [0, 3], [0, 0], [0, 0], [1, 1]], dtype=torch.float64))
        net[0].bias.copy_(torch.tensor([0, 0, -0.5, -1.5, -1, 1, 0], dtype=torch.float64))
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    groups = firing_groups(relu_activations(net, x, "1", chunk_size=64))
    assert groups.dead == [4]
    assert groups.always_on == [5]
    assert groups.synchronized == [[0, 1], [2, 3]]
    assert groups.summary() == {"dead": 1, "always_on": 1, "sync_groups": 2, "sync_neurons": 4, "largest_sync_group": 2}


def _known_structure(seed: int = 0):
    """Inputs: 3 informative coordinates of small variance and 5 of large variance that the readout ignores,
    mixed by an invertible layer. PCA removes the informative directions first; the interaction basis last."""
    g = torch.Generator().manual_seed(seed)
    n = 1500
    x = torch.cat([0.1 * torch.randn(n, 3, generator=g), 10 * torch.randn(n, 5, generator=g)], 1)
    w = torch.tensor([[1.0, -1, 0.5], [0.3, 1, -1], [-1, 0.2, 1]])
    y = (x[:, :3] @ w.T).argmax(1)
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        mix = torch.randn(8, 8, generator=g) + 3 * torch.eye(8)
        net[0].weight.copy_(mix)
        net[0].bias.zero_()
        readout = torch.zeros(3, 8)
        readout[:, :3] = w
        net[1].weight.copy_(readout @ torch.linalg.inv(mix))
        net[1].bias.zero_()
    return net, x, y


def test_ablation_curves_follow_the_known_structure():
    net, x, y = _known_structure()
    fit, test = slice(0, 1000), slice(1000, None)
    lib = interaction_bases(net, x[fit], ["input", "0", "output"], chunk_size=256, rtol=1e-9)["0"]
    assert (lib.importance[3:] < 1e-6 * lib.importance[0]).all()  # only three directions drive the logits
    gram, mean = activation_moments(net, x[fit], "0", 256)
    pca = pca_basis(gram, mean, 1e-9)
    lib_curve = ablation_curve(net, x[test], y[test], "0", lib, steps=9)
    pca_curve = ablation_curve(net, x[test], y[test], "0", pca, steps=9)
    full = lib_curve["accuracy"][-1]
    assert full > 0.95
    assert all(
        b >= a - 1e-12 for a, b in zip(lib_curve["accuracy"], lib_curve["accuracy"][1:])
    )  # never worse with more kept
    assert all(acc == full for k, acc in zip(lib_curve["kept"], lib_curve["accuracy"]) if k >= 3)
    assert (
        dict(zip(pca_curve["kept"], pca_curve["accuracy"]))[5] < 0.5
    )  # the five loud, irrelevant directions alone: chance
    assert directions_needed(lib_curve) <= 3 < directions_needed(pca_curve)
