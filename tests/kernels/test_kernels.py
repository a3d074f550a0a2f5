"""Every kernel kind against a slow reference on small random models (float64)."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError
from kernelscope.kernels import compute_kernel, kernel_spec
from kernelscope.kernels.assembly import KernelMemoryWarning
from kernelscope.kernels.representation import nbytes, represent
from kernelscope.models.zoo import build_cnn, build_mlp
from tests.support import kernel_reference as ref
from tests.support.plans import class_major_mb


def _cnn(n_out: int) -> nn.Module:
    torch.manual_seed(2)
    model = build_cnn((1, 6, 6), n_out, channels=(3, 4), hidden=(5,)).double()
    for m in model.modules():  # non-trivial running statistics, so eval-mode batch norm matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def models(n_out: int):
    torch.manual_seed(0)
    yield "ntk-mlp", build_mlp(36, [7, 6], n_out, "ntk").double(), 36
    torch.manual_seed(1)
    yield "tanh-mlp", nn.Sequential(nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, n_out)).double(), 36
    yield "cnn", _cnn(n_out), 36
    torch.manual_seed(4)  # LayerNorm is not factored: its parameters take the autograd fallback
    yield "layernorm-mlp", nn.Sequential(nn.Linear(36, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, n_out)).double(), 36


def _inputs(d: int):
    gen = torch.Generator().manual_seed(42)
    return torch.randn(5, d, generator=gen, dtype=torch.float64), torch.randn(7, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("n_out", [1, 3])
def test_exact_kernels_match_reference(n_out):
    for name, model, d in models(n_out):
        xq, xt = _inputs(d)
        expected = {
            "trntk0": ref.trntk0(model, xq, xt),
            "trntk": ref.cosine(ref.trntk0, model, xq, xt),
            "pntk": ref.pntk(model, xq, xt),
        }
        for kind, want in expected.items():
            for method in ("factored", "jacobian"):
                got = compute_kernel(model, xq, xt, kind=kind, chunk_size=3, method=method)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{name} {kind} {method}")


def test_ck_and_em_against_hand_built_activations():
    torch.manual_seed(0)
    model = build_mlp(4, [6, 5], 3, "ntk").double()
    xq, xt = torch.randn(4, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)

    def hidden_outputs(x):
        l1, r1, l2, r2, l3 = model
        h1 = r1(l1(x))
        h2 = r2(l2(h1))
        return h1, h2

    h1q, h2q = hidden_outputs(xq)
    h1t, h2t = hidden_outputs(xt)
    np.testing.assert_allclose(compute_kernel(model, xq, xt, kind="ck"), ref.cosine_of_features(h2q, h2t), rtol=1e-10)
    em = compute_kernel(model, xq, xt, kind="em")
    np.testing.assert_allclose(
        em, ref.cosine_of_features(torch.cat([h1q, h2q], 1), torch.cat([h1t, h2t], 1)), rtol=1e-10
    )
    only_first = compute_kernel(model, xq, xt, kind="em", layers=["1"])
    np.testing.assert_allclose(only_first, ref.cosine_of_features(h1q, h1t), rtol=1e-10)
    with pytest.raises(KernelscopeError, match="not modules"):
        compute_kernel(model, xq, xt, kind="em", layers=["nope"])


def _relative_error(model, xq, xt, kind, k, seed, projection):
    exact = compute_kernel(model, xq, xt, kind=kind.removeprefix("proj_"))
    if kind == "proj_pntk":
        exact = ref.cosine(ref.pntk, model, xq, xt)
    approx = compute_kernel(model, xq, xt, kind=kind, projection_dim=k, seed=seed, projection=projection)
    return np.abs(approx - exact).mean()


@pytest.mark.parametrize("projection", ["kron_hadamard", "gaussian", "rademacher"])
@pytest.mark.parametrize("kind", ["proj_trntk", "proj_pntk"])
def test_projected_error_shrinks_with_k(kind, projection):
    torch.manual_seed(0)
    model = build_mlp(12, [16, 16], 3, "ntk").double()
    xq, xt = torch.randn(6, 12, dtype=torch.float64), torch.randn(10, 12, dtype=torch.float64)
    small = np.mean([_relative_error(model, xq, xt, kind, 16, s, projection) for s in range(4)])
    large = np.mean([_relative_error(model, xq, xt, kind, 1024, s, projection) for s in range(4)])
    assert large < small / 3, (small, large)
    assert large < 0.05


def test_projected_cnn_kernel_is_close_to_exact():
    model = _cnn(3)
    xq, xt = _inputs(36)
    exact = compute_kernel(model, xq, xt, kind="trntk")
    approx = compute_kernel(model, xq, xt, kind="proj_trntk", projection_dim=4096, seed=1)
    assert np.abs(approx - exact).max() < 0.1


@pytest.mark.parametrize("kind", ["proj_trntk", "proj_pntk", "trntk", "ck"])
def test_features_do_not_depend_on_batch_composition(kind):
    torch.manual_seed(0)
    model = build_mlp(8, [10], 3, "ntk").eval()
    spec = kernel_spec(model, kind, projection_dim=64, seed=3)
    x = torch.randn(100, 8)
    alone = represent(spec, x[7:8])
    in_batch = represent(spec, x)
    shuffled = represent(spec, torch.cat([x[50:], x[:50]]))
    for rep in (in_batch, shuffled):
        row = 7 if rep is in_batch else 57
        pick = (lambda r, i=row: r[i : i + 1]) if isinstance(alone, torch.Tensor) else None
        if pick is not None:
            assert torch.equal(pick(rep), alone)
        else:
            for fa, fb in zip(alone, rep):
                for name in ("act", "delta", "grad"):
                    if hasattr(fa, name):
                        assert torch.equal(getattr(fb, name)[row : row + 1], getattr(fa, name))


def test_train_and_test_passes_give_identical_features():
    torch.manual_seed(0)
    model = build_mlp(8, [10], 3, "ntk").eval()
    x = torch.randn(20, 8)
    train_train = compute_kernel(model, x, kind="proj_trntk", projection_dim=128, seed=5)
    test_train = compute_kernel(model, x, x, kind="proj_trntk", projection_dim=128, seed=5)
    assert np.array_equal(train_train, test_train)


def test_blockwise_equals_one_shot_and_budget_path():
    model = _cnn(3)
    gen = torch.Generator().manual_seed(0)
    xq, xt = (
        torch.randn(11, 36, generator=gen, dtype=torch.float64),
        torch.randn(13, 36, generator=gen, dtype=torch.float64),
    )
    for kind in ("trntk", "pntk", "proj_trntk", "em"):
        one_shot = compute_kernel(model, xq, xt, kind=kind, chunk_size=1000)
        with pytest.warns(KernelMemoryWarning, match="kernel.memory_budget_mb = 0"):  # recomputed chunks
            blockwise = compute_kernel(model, xq, xt, kind=kind, chunk_size=4, memory_budget_mb=0)
        np.testing.assert_allclose(blockwise, one_shot, rtol=1e-12, atol=1e-14, err_msg=kind)


@pytest.mark.parametrize("n_out", [1, 4])
def test_train_by_train_is_symmetric_with_unit_diagonal(n_out):
    torch.manual_seed(3)
    model = build_mlp(4, [6], n_out, "ntk").double()
    x = torch.randn(11, 4, dtype=torch.float64)
    for kind in ("trntk", "proj_trntk", "proj_pntk", "ck", "em"):
        k = compute_kernel(model, x, kind=kind, chunk_size=3)
        np.testing.assert_allclose(k, k.T, rtol=1e-12, err_msg=kind)
        np.testing.assert_allclose(np.diag(k), 1.0, rtol=1e-12, err_msg=kind)


def test_float32_inputs_and_arrays_are_accepted():
    torch.manual_seed(0)
    model = build_mlp(4, [6], 2, "ntk")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    k = compute_kernel(model, x, kind="trntk")
    assert k.shape == (5, 5) and np.allclose(np.diag(k), 1.0, atol=1e-5)


def test_kernel_leaves_model_mode_and_refuses_bad_requests():
    model = build_mlp(4, [6], 2, "ntk")
    model.train()
    compute_kernel(model, torch.randn(3, 4), kind="trntk")
    assert model.training
    with pytest.raises(KernelscopeError, match="dtype"):
        compute_kernel(model, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(KernelscopeError, match="unknown"):
        compute_kernel(model, torch.randn(3, 4), kind="nope")
    with pytest.raises(KernelscopeError, match="projection"):
        compute_kernel(model, torch.randn(3, 4), kind="proj_trntk", projection="sparse")
    with pytest.raises(KernelscopeError, match="'projecton_dim' is not an option of any kernel kind"):
        compute_kernel(model, torch.randn(3, 4), kind="proj_trntk", projecton_dim=8)
    with pytest.raises(KernelscopeError, match="written by the loss_kernel stage"):
        compute_kernel(model, torch.randn(3, 4), kind="loss_corr")
    with pytest.raises(KernelscopeError, match="method 'autograd' is unknown"):
        compute_kernel(model, torch.randn(3, 4), kind="ck", method="autograd")


def test_fwht_is_the_sylvester_hadamard_product():
    from kernelscope.kernels.projection import fwht

    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 64, 128, 1 << 13):  # one factor, two, three (factors of at most 64)
        x = torch.randn(3, 2, n, generator=gen, dtype=torch.float64)
        hadamard = torch.tensor([[1.0]], dtype=torch.float64)
        while len(hadamard) < n:  # H_2n = [[H, H], [H, −H]], built the slow way
            hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
        torch.testing.assert_close(fwht(x), x @ hadamard, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("projection", ["kron_hadamard", "rademacher"])
def test_shared_layers_project_alike_formed_or_summed_over_positions(projection, monkeypatch):
    """A convolution's projection from its formed gradient equals the position-by-position sum."""
    from kernelscope.kernels import projection as proj
    from kernelscope.kernels.layers import layer_factors

    factors, _ = layer_factors(_cnn(3), _inputs(36)[0])
    assert any(f.shared for f in factors if hasattr(f, "act"))
    projected = []
    for formed in (True, False):
        monkeypatch.setattr(proj, "_hadamard_materializes", lambda f, k, formed=formed: formed)
        monkeypatch.setattr(proj, "_dense_materializes", lambda f, k, formed=formed: formed)
        projected.append(proj.Projector(96, seed=1, kind=projection).project(factors))
    torch.testing.assert_close(projected[0], projected[1], rtol=1e-10, atol=1e-12)


def test_weighted_factors_are_the_weighted_sum_of_per_class_gradients():
    """layer_factors(weights=w): one backward pass of Σ_c w_c F_c gives Σ_c w_c ∇F_c, layer by layer (the
    convolutions', the batch norms' and the autograd fallback's alike)."""
    from kernelscope.kernels.layers import layer_factors

    for name, model, d in models(3):
        x = _inputs(d)[0]
        w = torch.linspace(-1.0, 2.0, 15, dtype=torch.float64).reshape(5, 3)
        per_class, logits = layer_factors(model, x)
        combined, _ = layer_factors(model, x, weights=lambda z: w * torch.ones_like(z))
        for f_all, f_one in zip(per_class, combined):
            g_all = f_all.materialize() if hasattr(f_all, "act") else f_all.grad  # (b, C, p)
            g_one = f_one.materialize() if hasattr(f_one, "act") else f_one.grad  # (b, 1, p)
            torch.testing.assert_close(g_one[:, 0], torch.einsum("bcp,bc->bp", g_all, w), msg=f"{name} {f_all.name}")


@pytest.mark.parametrize("kind", ["trntk", "trntk0", "proj_trntk"])
def test_class_major_plan_when_only_one_class_fits_the_budget(kind, monkeypatch):
    from kernelscope.kernels import assembly

    taken = []
    real = assembly.class_major_blocks
    monkeypatch.setattr(assembly, "class_major_blocks", lambda *a, **k: taken.append(1) or real(*a, **k))
    for name, model, d in models(3):
        xq, xt = _inputs(d)
        model.eval()
        spec = kernel_spec(model, kind)
        per_sample = nbytes(represent(spec, xt[:1]))  # every class
        per_class = nbytes(represent(spec, xt[:1], 0))  # one class
        assert assembly.sample_bytes(spec, xt) == (per_sample, per_class)  # sized on one unpadded sample
        # One class of the training side and the (5, 7) output fit; all classes of the training side do not.
        budget_mb = class_major_mb(spec, xt, len(xq))
        assert assembly.plan_assembly(spec, xt, len(xq), 3, budget_mb) == "class_major"
        assert assembly.plan_assembly(spec, xt, len(xq), 3, 10 * budget_mb) == "hold"  # all classes fit there
        want = {
            "trntk0": lambda: ref.trntk0(model, xq, xt),
            "trntk": lambda: ref.cosine(ref.trntk0, model, xq, xt),
            "proj_trntk": lambda: compute_kernel(model, xq, xt, kind=kind),  # all classes' features held
        }[kind]()
        got = compute_kernel(model, xq, xt, kind=kind, chunk_size=3, memory_budget_mb=budget_mb)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{name} {kind}")
        np.testing.assert_allclose(got, compute_kernel(model, xq, xt, kind=kind, chunk_size=3), rtol=1e-12)
        # train x train, and a row-range task (as Dask runs them) gives the full pass's bytes for its rows
        budget_mb = class_major_mb(spec, xt, len(xt))
        full = dict(
            (s.start, b)
            for s, b in assembly.kernel_row_blocks(spec, xt, None, chunk_size=2, memory_budget_mb=budget_mb)
        )
        ranged = assembly.kernel_row_blocks(spec, xt, None, chunk_size=2, memory_budget_mb=budget_mb, rows=(2, 6))
        for rows, block in ranged:
            assert rows.start in (2, 4) and block.tobytes() == full[rows.start].tobytes()
        np.testing.assert_allclose(
            np.concatenate(list(full.values())), compute_kernel(model, xt, kind=kind), rtol=1e-12
        )
    assert len(taken) == 3 * len(list(models(3)))  # every call above took the class-major plan


def test_plan_is_sized_on_one_sample_before_any_all_class_micro_batch(monkeypatch):
    """A network whose all-class representation of a micro-batch passes the budget takes the class-major plan
    without ever forming one (the defect found on a ResNet18-width network: 15.7 GB against a 4 GB budget)."""
    from kernelscope.kernels import assembly

    torch.manual_seed(0)
    model = build_mlp(5, [7], 4, "ntk").double().eval()
    xq, xt = torch.randn(6, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    spec = kernel_spec(model, "trntk")
    per_sample, _ = assembly.sample_bytes(spec, xt)
    budget_mb = class_major_mb(spec, xt, len(xq))
    all_classes = assembly.MICRO_BATCH * (per_sample + spec.working_bytes(xt[:1]))
    assert all_classes > budget_mb * 2**20  # featurizing one all-class micro-batch would pass it
    batches = []
    all_classes = spec.represent
    spec = dataclasses.replace(spec, represent=lambda x: batches.append(len(x)) or all_classes(x))
    got = np.concatenate(
        [b for _, b in assembly.kernel_row_blocks(spec, xq, xt, chunk_size=4, memory_budget_mb=budget_mb)]
    )
    assert batches == [1]  # the one-sample size probe, nothing padded to a micro-batch
    np.testing.assert_allclose(got, ref.cosine(ref.trntk0, model, xq, xt), rtol=1e-10)
    # Without by_class, a budget below every plan warns and names what it would take.
    with pytest.warns(KernelMemoryWarning, match=r"Raise kernel.memory_budget_mb, or lower kernel.chunk_size\."):
        assembly.plan_assembly(kernel_spec(model, "proj_pntk"), xt, len(xq), 4, 1e-6)


def test_factor_working_set_counts_layer_outputs_per_output_direction():
    from kernelscope.kernels.layers import WORKING_SET_PER_OUTPUT_BYTE, factor_working_bytes

    model = build_mlp(5, [7, 3], 4, "ntk").double().eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    outputs = (7 + 3 + 4) * 8  # bytes a sample of the three linear layers' outputs (float64)
    assert factor_working_bytes(model, x, 4) == WORKING_SET_PER_OUTPUT_BYTE * 4 * outputs
    assert factor_working_bytes(model, x, 1) == WORKING_SET_PER_OUTPUT_BYTE * outputs  # one weighted direction
    assert kernel_spec(model, "trntk").working_bytes(x) == factor_working_bytes(model, x, 4)
