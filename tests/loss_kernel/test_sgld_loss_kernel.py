"""SGLD against hand-computed steps and a Gaussian posterior with known moments; loss kernel vs numpy."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.loss_kernel.kernel import loss_correlation, loss_covariance
from kernelscope.loss_kernel.sampler_health import top_curvature
from kernelscope.loss_kernel.sgld import SGLDConfig, sample, sgld_step


def test_sgld_step_by_hand():
    # w − (ε/2)(nβ g + γ (w − w*)) + sqrt(ε) η = 1 − 0.005 (200 + 5) + 0.1 · 0.3 = 0.005
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    w = sgld_step(t(1.0), t(2.0), t(0.5), 0.01, 10.0, 100.0, t(0.3))
    assert float(w) == pytest.approx(0.005)


class Location(nn.Module):
    """A one-parameter model: every output is w; with loss ½ (w − z)² the posterior is Gaussian."""

    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w0], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(len(x), 1)


def half_square(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out[:, 0] - z) ** 2


def test_gaussian_posterior_moments():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, generator=gen, dtype=torch.float64)
    x = torch.zeros(200, 1, dtype=torch.float64)
    w_star, nbeta, gamma = 0.3, 50.0, 50.0
    config = SGLDConfig(
        epsilon=1e-3,
        gamma=gamma,
        nbeta=nbeta,
        chains=4,
        draws=300,
        burn_in=200,
        steps_between=20,
        batch_size=200,
        seed=1,
    )
    probe_z = torch.tensor([-10.0], dtype=torch.float64)  # ℓ = ½ (w + 10)², so w = sqrt(2ℓ) − 10
    result = sample(Location(w_star), half_square, x, z, torch.zeros(1, 1, dtype=torch.float64), probe_z, config)
    draws = np.sqrt(2 * result.probe_losses[0]) - 10.0  # (chains, draws)
    precision = nbeta + gamma  # ∇² of nβ L_n + γ/2 ‖w − w*‖²
    mean = (nbeta * float(z.mean()) + gamma * w_star) / precision
    assert draws.mean() == pytest.approx(mean, abs=4 * (1 / precision) ** 0.5 / np.sqrt(300))
    assert draws.var() == pytest.approx(1 / precision, rel=0.2)
    assert result.probe_losses.shape == (1, 4, 300) and result.trace.shape == (4, 200 + 300 * 20)
    assert np.isfinite(result.llc)


def test_same_seed_same_draws_and_divergence_names_the_parameter():
    z = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.zeros(50, 1, dtype=torch.float64)
    config = SGLDConfig(
        epsilon=1e-3, gamma=10, nbeta=10, chains=2, draws=5, burn_in=5, steps_between=2, batch_size=16, seed=3
    )
    a = sample(Location(0.0), half_square, x, z, x[:3], z[:3], config)
    b = sample(Location(0.0), half_square, x, z, x[:3], z[:3], config)
    assert np.array_equal(a.probe_losses, b.probe_losses)
    wild = SGLDConfig(
        epsilon=10.0, gamma=1.0, nbeta=1e6, chains=2, draws=50, burn_in=50, steps_between=5, batch_size=16, seed=0
    )
    with pytest.raises(KernelscopeError, match="lower loss_kernel.epsilon.*raise loss_kernel.gamma"):
        sample(Location(0.0), half_square, x, z, x[:3], z[:3], wild)
    # The multitask validation's sampler lives in its own section, and the message says so.
    with pytest.raises(KernelscopeError, match="lower multitask.epsilon.*raise multitask.gamma"):
        sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(wild, section="multitask"))


def test_divergence_restarts_at_half_the_step_size():
    # Gradient steps on nβ·½(w − z̄)² multiply w − z̄ by 1 − ε nβ / 2: −2 at ε 6e-3 (diverges), −0.5 at 3e-3.
    z = torch.randn(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.zeros(64, 1, dtype=torch.float64)
    steep = SGLDConfig(
        epsilon=6e-3, gamma=1e-6, nbeta=1e3, chains=2, draws=20, burn_in=1500, steps_between=2, batch_size=64, seed=2
    )
    with pytest.raises(KernelscopeError, match=r"SGLD diverged \(step \d+, chain \d.*\(now 0\.006\)"):
        sample(Location(0.0), half_square, x, z, x[:3], z[:3], steep)
    restarted = sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(steep, retries=2))
    assert restarted.epsilon == 3e-3
    assert restarted.warnings[0].startswith("the chains diverged at loss_kernel.epsilon = 0.006 (step ")
    assert "the draws are at epsilon 0.003" in restarted.warnings[0]
    # The restart is the run at the lower step size from w*, with the same seed: the same draws, bit for bit.
    direct = sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(steep, epsilon=3e-3))
    assert direct.epsilon == 3e-3 and not any("diverged" in w for w in direct.warnings)
    assert np.array_equal(restarted.probe_losses, direct.probe_losses)
    # Out of restarts: one message naming every step size tried and the section's own value.
    with pytest.raises(
        KernelscopeError,
        match=r"diverged at loss_kernel.epsilon = 0.024 \(step .*, then 0.012 "
        r"\(step .*; lower loss_kernel.epsilon \(now 0.024\)",
    ):
        sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(steep, epsilon=0.024, retries=1))


def test_top_curvature_is_the_largest_hessian_eigenvalue_of_least_squares():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    y = torch.randn(200, generator=gen, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return (0.5 * (torch.func.functional_call(model, p, (xb,))[:, 0] - yb) ** 2).mean()

    params = {k: v.detach() for k, v in model.named_parameters()}
    expected = np.linalg.eigvalsh((x.T @ x / len(x)).numpy()).max()  # ∇² of ½ mean (xᵀw − y)²: XᵀX / n
    assert top_curvature(loss, params, x, y, seed=0) == pytest.approx(expected, rel=1e-6)


def test_a_step_too_large_for_the_curvature_is_a_health_warning():
    # ε (nβ · 1 + γ) / 2: 1.5 at ε 3e-3 (stable, |1 − 1.5| < 1, but overshooting), 0.5 at 1e-3.
    z = torch.randn(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.zeros(64, 1, dtype=torch.float64)
    config = SGLDConfig(
        epsilon=3e-3, gamma=1e-6, nbeta=1e3, chains=2, draws=20, burn_in=100, steps_between=2, batch_size=64, seed=2
    )
    rough = sample(Location(0.0), half_square, x, z, x[:3], z[:3], config)
    assert rough.curvature == pytest.approx(1.0) and rough.stability == pytest.approx(1.5)
    assert any("lower loss_kernel.epsilon to at most 0.002" in w for w in rough.warnings)
    assert rough.step_summary() == {"epsilon": 3e-3, "curvature": rough.curvature, "stability": rough.stability}
    fine = sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(config, epsilon=1e-3))
    assert fine.stability == pytest.approx(0.5) and not any("curvature" in w for w in fine.warnings)


def test_the_sampler_runs_on_its_own_thread_count_and_restores_the_callers():
    from kernelscope.core.threads import fixed_threads

    z = torch.randn(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.zeros(64, 1, dtype=torch.float64)
    config = SGLDConfig(epsilon=1e-3, gamma=10, nbeta=10, chains=2, draws=5, burn_in=5, batch_size=16, threads=1)
    seen: list[int] = []

    def watching(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return half_square(out, target)

    with fixed_threads(2):
        result = sample(Location(0.0), watching, x, z, x[:3], z[:3], config)
        assert torch.get_num_threads() == 2
    assert seen and set(seen) == {1}
    with fixed_threads(1):
        direct = sample(Location(0.0), half_square, x, z, x[:3], z[:3], dataclasses.replace(config, threads=None))
    assert np.array_equal(result.probe_losses, direct.probe_losses)


def test_vectorized_chains_on_a_classifier():
    from kernelscope.models.zoo import build_mlp

    torch.manual_seed(0)
    model = build_mlp(4, [8], 3, "ntk")
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))

    def per_sample(out, target):
        return torch.nn.functional.cross_entropy(out, target, reduction="none")

    config = SGLDConfig(epsilon=1e-4, gamma=100, chains=3, draws=6, burn_in=4, steps_between=2, batch_size=16, seed=0)
    result = sample(model, per_sample, x, y, x[:10], y[:10], config)
    assert result.probe_losses.shape == (10, 3, 6)
    with torch.no_grad():
        expected = per_sample(model(x[:10]), y[:10]).numpy()
    np.testing.assert_allclose(result.loss_at_optimum, expected, rtol=1e-5)
    assert not np.allclose(result.probe_losses[:, 0], result.probe_losses[:, 1])  # chains differ


def test_covariance_and_correlation_against_numpy():
    rng = np.random.default_rng(0)
    losses = rng.normal(size=(6, 3, 40)) + rng.normal(size=(6, 1, 1))
    cov = loss_covariance(losses)
    np.testing.assert_allclose(cov, np.cov(losses.reshape(6, -1)), rtol=1e-12)
    np.testing.assert_allclose(loss_correlation(cov), np.corrcoef(losses.reshape(6, -1)), rtol=1e-12)
    within = loss_covariance(losses, center_chains=True)
    centered = (losses - losses.mean(axis=2, keepdims=True)).reshape(6, -1)
    np.testing.assert_allclose(within, centered @ centered.T / (120 - 3), rtol=1e-12)
    constant = np.ones((2, 1, 5))
    assert np.array_equal(loss_correlation(loss_covariance(constant)), np.zeros((2, 2)))


def test_label_agreement_by_hand():
    from kernelscope.loss_kernel.stages import label_agreement

    r = np.array([[1.0, 0.9, 0.1, 0.2], [0.9, 1.0, 0.3, 0.1], [0.1, 0.3, 1.0, 0.8], [0.2, 0.1, 0.8, 1.0]])
    labels = np.array([0, 0, 1, 0])
    out = label_agreement(r, labels, k=1)
    # nearest: 0->1 (same), 1->0 (same), 2->3 (differs), 3->2 (differs): 2 of 4; base rate (3/4)² + (1/4)²
    assert out["agreement"] == pytest.approx(0.5)
    assert out["base_rate"] == pytest.approx(0.625)
    assert out["lift"] == pytest.approx(0.8)


def test_loss_kernel_stage_writes_kernels_the_kglm_can_use(tiny_run, monkeypatch):
    import pyarrow.parquet as pq

    from kernelscope.data.datasets import read_dataset
    from kernelscope.kernels.store import read_kernel
    from kernelscope.loss_kernel import plots
    from kernelscope.loss_kernel.stages import loss_kernel_stage
    from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage
    from tests.support.expect import written_binary_accuracy

    # The UMAP map's own call (umap-learn compiles for ~30 s in every process) is drawn by test_multitask.py; here
    # a classical-MDS stand-in checks what the stage hands it and that the map is drawn.
    embedded = []

    def mds(r: np.ndarray, seed: int = 0) -> np.ndarray:
        embedded.append(r)
        _, vectors = np.linalg.eigh(r)
        return vectors[:, -2:]  # (n_probe, 2)

    monkeypatch.setattr(plots, "umap_embedding", mds)
    made = tiny_run(("data", "train"))
    params = made.params_with(
        loss_kernel={"chains": 2, "draws": 8, "burn_in": 4, "steps_between": 2, "batch_size": 64, "umap": True}
    )
    layout = made.layout
    summary = loss_kernel_stage(params, layout).summary
    assert np.isfinite(summary["llc"])
    # label agreement recomputed from the written probe losses: numpy's correlation, each probe's 10 nearest others
    probes = pq.read_table(layout.root / "loss_kernel" / "probe_losses.parquet")
    losses = np.stack(probes.column("losses").to_numpy(zero_copy_only=False)).astype(np.float64)  # (n_probe, c · d)
    ds = read_dataset(layout.data_dir)
    assert probes.column("probe_id").to_numpy().tolist() == [*ds.train.ids, *ds.test.ids]
    labels = np.concatenate([ds.train.y, ds.test.y])
    r = np.corrcoef(losses)
    (handed,) = embedded
    np.testing.assert_allclose(handed, r, atol=1e-5)  # the map is of the probes' loss correlation
    np.fill_diagonal(r, -np.inf)
    nearest = np.argsort(-r, axis=1, kind="stable")[:, : params.loss_kernel.neighbours]
    assert summary["label_agreement"] == pytest.approx((labels[nearest] == labels[:, None]).mean(), abs=1e-3)
    assert summary["label_base_rate"] == pytest.approx(((np.bincount(labels) / len(labels)) ** 2).sum())
    k_train, meta = read_kernel(layout.kernel_path("loss_corr", "train"))
    k_test, _ = read_kernel(layout.kernel_path("loss_corr", "test"))
    assert meta["kind"] == "loss_corr" and k_train.shape[0] == k_train.shape[1] == k_test.shape[1]
    np.testing.assert_allclose(np.diag(k_train), 1.0, atol=1e-5)
    fit_kglm_stage(params, layout, "loss_corr")
    result = evaluate_stage(params, layout, "loss_corr").summary
    assert result["kglm_accuracy"] == pytest.approx(written_binary_accuracy(layout.kglm_dir("loss_corr"), "kglm"))
    for name in ("traces.png", "probe_losses.parquet", "correlation.png", "covariance_groups.png", "umap.png"):
        assert (layout.root / "loss_kernel" / name).stat().st_size > 0, name
