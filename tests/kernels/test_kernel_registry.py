"""A kernel kind registered from outside the library runs end to end: params, kernel stage, store, kGLM.

The toy kind is the cosine of the trained network's output logits; nothing under src/ knows about it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.core.errors import KernelscopeError, ParamsError
from kernelscope.core.params import params_from_dict
from kernelscope.core.provenance import kernel_expect, kernel_options, run_checkpoint, run_data
from kernelscope.data.datasets import read_dataset
from kernelscope.kernels.registry import KERNELS, KernelKind, register_kernel
from kernelscope.kernels.representation import KernelSpec
from kernelscope.kernels.stages import kernel_stage
from kernelscope.kernels.store import read_kernel
from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage
from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_binary_accuracy, written_tau

TOY = "toy_logits"


def _build_toy(model: nn.Module, options: dict, memory_budget_mb: int, method: str) -> KernelSpec:
    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # a representation carries no autograd graph
            return model(x).double()  # (b, C)

    return KernelSpec(TOY, "cosine", logits, lambda a, b: a @ b.T, lambda a: (a**2).sum(1))


@pytest.fixture
def toy_kind():
    entry = register_kernel(KernelKind(TOY, "cosine", _build_toy))
    yield entry
    del KERNELS[TOY]


def _cosine(features_q: np.ndarray, features_t: np.ndarray) -> np.ndarray:
    """The slow, obvious cosine: one pair at a time."""
    out = np.empty((len(features_q), len(features_t)))
    for i, a in enumerate(features_q):
        for j, b in enumerate(features_t):
            out[i, j] = np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))
    return out


def test_registered_kind_runs_through_kernel_stage_and_kglm(tiny_run, toy_kind):
    made = tiny_run(("data", "train"))
    # params accept the kind once it is registered; several blocks per file
    params = made.params_with(kernel={"kinds": [TOY], "chunk_size": 50})
    layout = made.layout
    written = kernel_stage(params, layout, TOY, progress=False).summary
    assert written["train"] == str(made.out / "digits2" / "kernels" / TOY / "train.parquet")

    ds = read_dataset(layout.data_dir)
    model = run_checkpoint(params, layout.model_dir, run_data(params, layout)).model.double().eval()
    with torch.no_grad():
        train_logits = model(torch.from_numpy(ds.train.x).double()).numpy()  # (n_train, C)
        test_logits = model(torch.from_numpy(ds.test.x).double()).numpy()  # (n_test, C)
    for split, queries, ids in (("train", train_logits, ds.train.ids), ("test", test_logits, ds.test.ids)):
        k, meta = read_kernel(
            layout.kernel_path(TOY, split),
            query_ids=ids,
            expect=kernel_expect(params, TOY, written["checkpoint_hash"], ds, split),
        )
        assert meta["kind"] == TOY and meta["normalization"] == "cosine" and meta["split"] == split
        assert k.shape == (len(ids), len(ds.train.ids))
        # stored as float32
        np.testing.assert_allclose(k, _cosine(queries, train_logits), atol=2e-6, rtol=0, err_msg=split)

    fit = fit_kglm_stage(params, layout, TOY).summary
    summary = evaluate_stage(params, layout, TOY).summary
    assert fit["kind"] == TOY and summary["kind"] == TOY
    assert summary["tau_k"] == pytest.approx(written_tau(layout.kglm_dir(TOY)), abs=WRITTEN_TAU_TOLERANCE)
    assert summary["kglm_accuracy"] == pytest.approx(written_binary_accuracy(layout.kglm_dir(TOY), "kglm"))
    assert summary["kglm_accuracy"] > 0.5
    comparison = compare_stage(params, layout, [summary]).summary  # no exact counterpart: no residual plot
    assert [row["kernel"] for row in comparison["table"]] == [TOY]
    assert not list(layout.comparison_dir.glob("residuals_*.png"))


def test_registered_kind_records_only_what_it_reads(tiny_params_dict, toy_kind):
    from flows.sections import kernel_sections

    tiny_params_dict["table"] = {"kind": TOY}
    tiny_params_dict["poison"] = {"kinds": ["trntk", TOY]}
    params = params_from_dict(tiny_params_dict)
    assert params.table.kind == TOY and params.poison.kinds == ("trntk", TOY)
    assert kernel_options(params, TOY) == {}
    kernel = kernel_sections(params, TOY, "digits2")["kernel"]
    # no projection, em_layers, list of kinds nor topk (dense storage)
    assert kernel == {"chunk_size": 64, "memory_budget_mb": 64, "storage": "dense"}
    assert kernel_sections(params, "proj_trntk", "digits2")["kernel"] == {
        "chunk_size": 64,
        "memory_budget_mb": 64,
        "projection_dim": 256,
        "projection": "kron_hadamard",
        "storage": "dense",
    }


def test_unknown_kind_is_a_clear_params_error(tiny_params_dict):
    tiny_params_dict["kernel"]["kinds"] = ["trntk", "rbf"]
    with pytest.raises(ParamsError) as error:
        params_from_dict(tiny_params_dict)
    assert str(error.value) == (
        "params: field 'kernel.kinds.1' is invalid (Input should be 'trntk', 'trntk0', 'pntk', "
        "'proj_trntk', 'proj_pntk', 'ck' or 'em'; got 'rbf'); fix it in params."
    )
    # The loss kernels are registered too, but params may not name them: the kernel stage does not compute them.
    for field, raw in (
        ("table.kind", {"table": {"kind": "rbf"}}),
        ("poison.kinds.0", {"poison": {"kinds": ["rbf"]}}),
        ("kernel.kinds.0", {"kernel": {"kinds": ["loss_corr"]}}),
    ):
        with pytest.raises(ParamsError, match=f"field '{field}' is invalid"):
            params_from_dict(raw)


def test_removed_kind_is_refused_again(tiny_params_dict):
    register_kernel(KernelKind(TOY, "cosine", _build_toy))
    del KERNELS[TOY]
    tiny_params_dict["kernel"]["kinds"] = [TOY]
    with pytest.raises(ParamsError, match=f"got '{TOY}'"):
        params_from_dict(tiny_params_dict)


def test_duplicate_and_malformed_registrations_are_refused(toy_kind):
    with pytest.raises(KernelscopeError, match="'trntk' is already registered"):
        register_kernel(KernelKind("trntk", "cosine", _build_toy))
    with pytest.raises(KernelscopeError, match=f"'{TOY}' is already registered"):
        register_kernel(KernelKind(TOY, "none", _build_toy))
    assert KERNELS[TOY] is toy_kind and KERNELS["trntk"].normalization == "cosine"  # the first entries stay
    bad = [
        (KernelKind("toy_norm", "l2", _build_toy), "normalization 'l2'"),
        (KernelKind("toy_nobuild", "cosine", None), "needs a builder"),
        (KernelKind("toy_exact", "cosine", _build_toy, exact="nope"), "counterpart 'nope'"),
    ]
    for entry, message in bad:
        with pytest.raises(KernelscopeError, match=message):
            register_kernel(entry)
        assert entry.name not in KERNELS
