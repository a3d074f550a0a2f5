"""The four stages end to end on a tiny model, without Prefect, DVC or MLflow."""

import json

import numpy as np
import pytest

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import params_from_dict
from kernelscope.data.stages import data_stage
from kernelscope.kernels.stages import kernel_stage
from kernelscope.kernels.store import read_kernel
from kernelscope.models.stages import train_stage
from kernelscope.surrogate.faithfulness import correct_class_logit, faithfulness
from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage
from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_binary_accuracy, written_tau


def test_correct_class_logit_matches_direct_formula():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(20, 4)), rng.integers(0, 4, 20)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p[np.arange(20), y]
    np.testing.assert_allclose(correct_class_logit(logits, y), np.log(py / (1 - py)), rtol=1e-10)
    z, yb = rng.normal(size=(10, 1)), rng.integers(0, 2, 10)
    p1 = 1 / (1 + np.exp(-z[:, 0]))
    pyb = np.where(yb == 1, p1, 1 - p1)
    np.testing.assert_allclose(correct_class_logit(z, yb), np.log(pyb / (1 - pyb)), rtol=1e-10)


def test_saturated_probabilities_keep_their_order():
    # float64 probabilities of these logits all round to 1.0; their logits do not tie
    logits = np.array([[40.0], [45.0], [50.0]])
    report, points = faithfulness(np.array([1, 1, 1]), logits, logits * 2)
    assert report.tau_k == pytest.approx(1.0)
    assert np.all(np.diff(points["nn_logit"]) > 0)


def test_stages_end_to_end_and_deterministic(tmp_path, tiny_params_dict):
    # Not tiny_run: the subject is two independent builds from scratch giving the same bytes (a cached run would
    # compare a run with its own copy), stage by stage.
    tiny_params_dict["kernel"]["kinds"] = ["trntk", "proj_trntk"]
    tiny_params_dict["kernel"]["chunk_size"] = 50  # several row groups per kernel file
    params = params_from_dict(tiny_params_dict)
    outputs = {}
    for run in ("a", "b"):
        layout = RunLayout(tmp_path / run)
        data_stage(params, "digits2", layout)
        trained = train_stage(params, layout, progress=False).summary
        summaries = []
        for kind in params.kernel.kinds:
            kernel_stage(params, layout, kind, progress=False)
            fit_kglm_stage(params, layout, kind)
            summaries.append(evaluate_stage(params, layout, kind).summary)
        comparison = compare_stage(params, layout, summaries).summary
        outputs[run] = (layout, trained, summaries[0])
    (la, ta, sa), (lb, tb, sb) = outputs["a"], outputs["b"]
    assert ta["checkpoint_hash"] == tb["checkpoint_hash"]  # seeded training: the same bytes
    for split in ("train", "test"):
        assert la.kernel_path("trntk", split).read_bytes() == lb.kernel_path("trntk", split).read_bytes()
    assert sa["tau_k"] == sb["tau_k"]
    k, meta = read_kernel(la.kernel_path("trntk", "test"))
    assert k.shape == (meta["n_query"], meta["n_train"]) and meta["split"] == "test"
    assert meta["checkpoint_hash"] == ta["checkpoint_hash"] and meta["normalization"] == "cosine"
    assert sa["tau_k"] == pytest.approx(written_tau(la.kglm_dir("trntk")), abs=WRITTEN_TAU_TOLERANCE)
    assert sa["nn_accuracy"] == pytest.approx(written_binary_accuracy(la.kglm_dir("trntk"), "nn"))
    assert sa["nn_accuracy"] > 0.9
    assert sa["kglm_accuracy"] == pytest.approx(written_binary_accuracy(la.kglm_dir("trntk"), "kglm"))
    assert json.loads((la.kglm_dir("trntk") / "metrics.json").read_text())["tau_k"] == sa["tau_k"]
    assert (la.kglm_dir("trntk") / "probabilities.png").stat().st_size > 1000
    assert [row["kernel"] for row in comparison["table"]] == ["trntk", "proj_trntk"]
    assert (la.comparison_dir / "residuals_proj_trntk.png").exists()
    assert "| proj_trntk |" in (la.comparison_dir / "comparison.md").read_text()
    proj, meta = read_kernel(la.kernel_path("proj_trntk", "train"))
    assert meta["projection_dim"] == params.kernel.projection_dim and meta["seed"] == params.seed
    assert np.abs(proj - read_kernel(la.kernel_path("trntk", "train"))[0]).max() < 0.1


def test_seeds_trained_in_parallel_threads_match_sequential_training():
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from kernelscope.core.param_sections import TrainParams
    from kernelscope.data.datasets import make_digits
    from kernelscope.models.train import train_classifier

    ds = make_digits("digits2", 0.3, 0)
    params = TrainParams(hidden=(8,), epochs=2)
    sequential = {seed: train_classifier(ds, params, seed, progress=False).model.state_dict() for seed in (1, 2, 3, 4)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = dict(
            zip(
                (1, 2, 3, 4),
                pool.map(lambda s: train_classifier(ds, params, s, progress=False).model.state_dict(), (1, 2, 3, 4)),
            )
        )
    for seed in sequential:
        assert all(torch.equal(sequential[seed][k], parallel[seed][k]) for k in sequential[seed])
