"""Numerical faults: non-finite weights, SGLD divergence, zero self-kernels and undefined metrics.

Each fault either stops with a named KernelscopeError (one sentence naming the file/field and the
fix) and leaves no artifact behind, or is handled as documented:
- NaN/inf checkpoint weights: CheckpointError from the kernel, kGLM, evaluate and loss-kernel stages.
- weights that overflow (finite, huge): the kernel writer refuses NaN/inf blocks, no file is written.
- SGLD divergence: the sampler's error names loss_kernel.epsilon and loss_kernel.gamma; no probe losses.
- a zero self-kernel in a cosine-normalized kernel: that row/column is 0 and a ZeroSelfKernelWarning
  counts the samples (kernels.assembly.kernel_row_blocks).
- undefined metrics (τ_K of constant inputs, R_Miss with no mistakes) are NaN on purpose, null in
  the DVC metrics file.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.core.errors import CheckpointError, KernelscopeError
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import params_from_dict
from kernelscope.core.provenance import model_spec
from kernelscope.data.datasets import read_dataset
from kernelscope.kernels.stages import kernel_stage
from kernelscope.models.checkpoint import load_checkpoint, save_checkpoint
from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage
from tests.support.runs import TINY_PARAMS

LOSS_KERNEL = {"chains": 2, "draws": 8, "burn_in": 4, "steps_between": 2, "batch_size": 64, "umap": False}


@pytest.fixture
def run(tiny_run):
    """A finished tiny run (data, model, trntk kernels, evaluated kGLM) to damage: its params, with a short SGLD run
    for the loss kernel, and its layout."""
    made = tiny_run(("data", "train", "kernel", "kglm"))
    return made.params_with(loss_kernel=LOSS_KERNEL), made.layout


def damage_checkpoint(layout: RunLayout, value: float, scale: float = 1.0) -> None:
    """Rewrite the run's checkpoint (with a consistent sidecar) after setting one weight to ``value``
    and scaling all."""
    params = params_from_dict(copy.deepcopy(TINY_PARAMS))
    spec = model_spec(params, read_dataset(layout.data_dir))
    ckpt = load_checkpoint(layout.model_dir, spec)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.mul_(scale)
        first = next(ckpt.model.parameters())
        first.view(-1)[3] = value
    m = ckpt.meta
    save_checkpoint(ckpt.model, layout.model_dir, spec, dataset_name=m["dataset"]["name"], metrics=m["metrics"])


def snapshot(layout: RunLayout) -> dict[str, bytes]:
    return {
        str(p.relative_to(layout.root)): p.read_bytes()
        for p in sorted(layout.root.rglob("*"))
        if p.is_file() and "model" not in p.parts
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_stop_every_stage_by_name_and_write_nothing(run, bad):
    params, layout = run
    (layout.kglm_dir("trntk") / "metrics.json").unlink()  # the healthy run's evaluation: the refused one writes none
    damage_checkpoint(layout, bad)
    before = snapshot(layout)
    for stage in (
        lambda: kernel_stage(params, layout, "trntk", progress=False),
        lambda: kernel_stage(params, layout, "pntk", progress=False),
        lambda: fit_kglm_stage(params, layout, "trntk"),
        lambda: evaluate_stage(params, layout, "trntk"),
    ):
        with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '.*' holds 1 non-finite .*retrain"):
            stage()
    assert snapshot(layout) == before  # earlier kernels and kGLM untouched, no metrics.json, no pntk kernel
    assert not (layout.kglm_dir("trntk") / "metrics.json").exists()
    assert not list(layout.root.rglob(".*.tmp"))


def test_non_finite_weights_stop_the_loss_kernel_before_sgld_blames_epsilon(run):
    from kernelscope.loss_kernel.stages import loss_kernel_stage

    params, layout = run
    damage_checkpoint(layout, float("nan"))
    with pytest.raises(CheckpointError, match="non-finite") as caught:
        loss_kernel_stage(params, layout)
    assert "epsilon" not in str(caught.value)
    assert not (layout.root / "loss_kernel").exists()


def test_cli_reports_non_finite_weights_in_one_line(run, capsys):
    from kernelscope.cli import main

    params, layout = run
    damage_checkpoint(layout, float("nan"))
    (layout.root.parent / "params.yaml").write_text(json.dumps(params.model_dump(mode="json")))  # JSON is YAML
    code = main(
        [
            "kernel",
            "--kind",
            "trntk",
            "--dataset",
            "digits2",
            "--out",
            str(layout.root.parent),
            "--params",
            str(layout.root.parent / "params.yaml"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kernelscope kernel: error: ") and "non-finite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_overflowing_weights_never_reach_a_kernel_file(run):
    """Finite but huge weights overflow the forward pass: the writer refuses the NaN/inf block; the old file stays."""
    params, layout = run
    damage_checkpoint(layout, 1e30, scale=1e30)
    with pytest.raises(
        KernelscopeError, match=r"train\.parquet: \d+ kernel values are NaN or inf .*check or retrain the checkpoint"
    ):
        kernel_stage(params, layout, "trntk0", progress=False)
    assert not layout.kernel_path("trntk0", "train").exists()
    assert not list(layout.root.rglob(".*.tmp"))


def test_writer_refuses_non_finite_and_float32_overflow_keeping_the_previous_file(tmp_path):
    from kernelscope.kernels.store import read_kernel, write_kernel

    path = tmp_path / "k.parquet"
    ids = np.arange(3)
    write_kernel(path, np.eye(3), ids, ids, {"kind": "trntk"})
    good = path.read_bytes()
    for bad in (np.nan, np.inf, 1e300):  # 1e300 is finite in float64 but inf once stored as float32
        k = np.eye(3)
        k[2, 1] = bad
        with pytest.raises(KernelscopeError, match="first at query id 2"):
            write_kernel(path, k, ids, ids, {"kind": "trntk"})
        assert path.read_bytes() == good
    assert np.array_equal(read_kernel(path)[0], np.eye(3, dtype=np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["k.parquet"]


def test_kglm_refuses_a_non_finite_kernel():
    from kernelscope.surrogate.kglm import fit_kglm

    k = np.eye(6)
    k[1, 4] = np.nan
    with pytest.raises(KernelscopeError, match="1 NaN or inf values; recompute it"):
        fit_kglm(k, np.array([0, 1] * 3), alpha=1e-3, max_iter=50, tol=1e-3, seed=0)


def test_sgld_divergence_names_epsilon_and_gamma_and_leaves_no_probe_losses(run):
    from kernelscope.loss_kernel.stages import loss_kernel_stage

    params, layout = run
    params = params.model_copy(
        update={"loss_kernel": params.loss_kernel.model_copy(update={"epsilon": 1e4, "gamma": 1.0})}
    )
    with pytest.raises(
        KernelscopeError,
        match=r"SGLD diverged .*lower loss_kernel\.epsilon \(now 10000\) or raise loss_kernel\.gamma \(now 1\)",
    ):
        loss_kernel_stage(params, layout)
    leftovers = list((layout.root / "loss_kernel").rglob("*")) if (layout.root / "loss_kernel").exists() else []
    assert leftovers == []  # no probe_losses.parquet, no loss kernels, no temporary files
    assert not (layout.root / "loss_kernel_metrics.json").exists()


def _bias_free_relu(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 12, bias=False), nn.ReLU(), nn.Linear(12, 12, bias=False), nn.ReLU(), nn.Linear(12, 3, bias=False)
    ).double()


@pytest.mark.parametrize("kind", ["trntk", "proj_trntk", "ck", "em"])
def test_zero_self_kernel_gives_a_zero_row_and_a_counting_warning(kind):
    """An all-zero input to a bias-free ReLU net has zero gradient and features: cosine kernels set its row and
    column to 0 (never NaN) and warn with the count, for the training side and for a query set."""
    from kernelscope.kernels import compute_kernel
    from kernelscope.kernels.assembly import ZeroSelfKernelWarning

    model = _bias_free_relu()
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[[2, 5]] = 0.0
    with pytest.warns(ZeroSelfKernelWarning, match=f"{kind} kernel: 2 of 7 training samples have a zero self-kernel"):
        k = compute_kernel(model, x, kind=kind, chunk_size=3, projection_dim=64)
    assert np.all(np.isfinite(k))
    assert np.all(k[[2, 5]] == 0) and np.all(k[:, [2, 5]] == 0)
    others = [0, 1, 3, 4, 6]
    np.testing.assert_allclose(np.diag(k)[others], 1.0, atol=1e-6 if kind != "proj_trntk" else 0.3)
    queries = torch.cat([x[:2], torch.zeros(1, 5, dtype=torch.float64)])
    with pytest.warns(ZeroSelfKernelWarning) as record:
        kq = compute_kernel(model, queries, x, kind=kind, chunk_size=3, projection_dim=64)
    assert any("1 of 3 query samples" in str(w.message) for w in record)
    assert np.all(kq[2] == 0) and np.all(np.isfinite(kq))


def test_zero_self_kernel_warns_alike_when_the_kernel_is_taken_one_class_at_a_time(monkeypatch):
    from kernelscope.kernels import assembly, compute_kernel, kernel_spec
    from kernelscope.kernels.assembly import ZeroSelfKernelWarning
    from tests.support.plans import class_major_mb

    taken = []
    real = assembly.class_major_blocks
    monkeypatch.setattr(assembly, "class_major_blocks", lambda *a, **k: taken.append(1) or real(*a, **k))
    model = _bias_free_relu().eval()
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[[2, 5]] = 0.0
    budget = class_major_mb(kernel_spec(model, "trntk"), x, 7)  # one class and the output fit, not all classes
    with pytest.warns(ZeroSelfKernelWarning, match="trntk kernel: 2 of 7 training samples have a zero self-kernel"):
        k = compute_kernel(model, x, kind="trntk", chunk_size=3, memory_budget_mb=budget)
    assert np.all(k[[2, 5]] == 0) and np.all(k[:, [2, 5]] == 0) and np.all(np.isfinite(k))
    queries = torch.cat([x[:2], torch.zeros(1, 5, dtype=torch.float64)])
    with pytest.warns(ZeroSelfKernelWarning) as record:
        kq = compute_kernel(model, queries, x, kind="trntk", chunk_size=3, memory_budget_mb=budget)
    assert any("1 of 3 query samples" in str(w.message) for w in record) and np.all(kq[2] == 0)
    assert len(taken) == 2


def test_no_warning_when_every_self_kernel_is_positive_and_pntk_stays_unnormalized():
    from kernelscope.kernels import compute_kernel

    model = _bias_free_relu()
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_kernel(model, x, kind="trntk", chunk_size=4)
        x[0] = 0.0
        k = compute_kernel(model, x, kind="pntk", chunk_size=4)  # not cosine-normalized: a zero row, nothing to divide
    assert np.all(k[0] == 0) and np.all(np.isfinite(k))


def test_undefined_metrics_are_nan_on_purpose_and_null_in_the_metrics_file(tmp_path):
    from kernelscope.surrogate.faithfulness import faithfulness
    from kernelscope.surrogate.metrics import r_miss, tau_k
    from kernelscope.surrogate.stages import write_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy may warn about a constant input; the value is what matters
        assert np.isnan(tau_k(np.ones(5), np.arange(5.0)))
        y = np.array([0, 1, 0, 1])
        assert np.isnan(r_miss(y, y, y))  # neither model misclassifies: 0/0
        logits = np.array([[2.0], [-2.0], [3.0], [-1.0]])
        report, _ = faithfulness(y, logits, np.zeros((4, 1)))  # a kGLM with constant logits: tau undefined, no crash
    # constant logit 0: class 0 everywhere, right on the two points labelled 0; the NN's logits are all wrong
    assert np.isnan(report.tau_k) and report.kglm_accuracy == 0.5 and report.nn_accuracy == 0.0
    layout = RunLayout(tmp_path / "run")
    summary = {
        "kind": "trntk",
        "tau_k": report.tau_k,
        "tad": report.tad,
        "r_miss": float("nan"),
        "nn_accuracy": 1.0,
        "kglm_accuracy": 0.5,
    }
    written = json.loads(write_metrics(layout, [summary]).read_text())
    assert (
        written["trntk"]["tau_k"] is None
        and written["trntk"]["r_miss"] is None
        and written["trntk"]["nn_accuracy"] == 1.0
    )
