"""Explain and report on a saved run (tiny model), and refusals of bad input files."""

import numpy as np
import pytest

from kernelscope.core.errors import KernelscopeError
from kernelscope.surrogate.explain import Query, explain, load_inputs
from kernelscope.surrogate.report import build_report


@pytest.fixture
def saved_run(tiny_run):
    """A private copy of a finished digits10 run (data, model, trntk and ck kernels, kGLMs, comparison)."""
    made = tiny_run(("data", "train", "kernel", "kglm"), datasets=["digits10"], kernel={"kinds": ["trntk", "ck"]})
    return made.params, made.layout


def test_explain_test_point_produces_every_output(saved_run):
    params, layout = saved_run
    from kernelscope.data.datasets import read_dataset

    ds = read_dataset(layout.data_dir)
    query = Query("test-3", ds.test.x[3], int(ds.test.y[3]), 3)
    kinds = list(params.kernel.kinds)
    r = explain(params, layout, kinds, query, 4)
    assert set(r["kernels"]) == {"trntk", "ck"}
    trntk = r["kernels"]["trntk"]
    assert len(trntk["most_similar"]) == 4 and len(trntk["top_attribution_per_logit"]) == 10
    sims = [s["similarity"] for s in trntk["most_similar"]]
    assert sims == sorted(sims, reverse=True)
    assert abs(sum(trntk["kglm_probabilities"]) - 1) < 1e-5
    for key in ("boxplot", "grid", "report"):
        assert (layout.root / "explain" / "test-3" / __import__("pathlib").Path(r[key]).name).stat().st_size > 500
    text = (layout.root / "explain" / "test-3" / "report.md").read_text()
    assert "NN prediction" in text and "| trntk |" in text and "neighbours.png" in text


def test_explain_new_input_from_npz_matches_test_point(saved_run, tmp_path):
    params, layout = saved_run
    from kernelscope.data.datasets import read_dataset

    ds = read_dataset(layout.data_dir)
    np.savez(tmp_path / "digit.npz", x=ds.test.x[3])
    x = load_inputs(tmp_path / "digit.npz", 64)
    kinds = ["trntk"]
    from_file = explain(params, layout, kinds, Query("digit", x[0], None, None), 3)
    stored = explain(params, layout, kinds, Query("test-3b", ds.test.x[3], int(ds.test.y[3]), 3), 3)
    assert [s["train_id"] for s in from_file["kernels"]["trntk"]["most_similar"]] == [
        s["train_id"] for s in stored["kernels"]["trntk"]["most_similar"]
    ]
    np.testing.assert_allclose(
        from_file["kernels"]["trntk"]["kglm_probabilities"], stored["kernels"]["trntk"]["kglm_probabilities"], atol=1e-4
    )


def test_explain_on_a_top_k_kernel_ranks_the_stored_entries(saved_run, tmp_path):
    """kernel.storage: topk: the most similar points are the dense kernel's top ones (a stored entry is never outranked
    by a missing one), a new input keeps its own top k, and the kGLM on the top-k kernel explains it as stored."""
    from kernelscope.data.datasets import read_dataset
    from kernelscope.kernels.stages import kernel_stage
    from kernelscope.kernels.store import read_kernel
    from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage

    params, layout = saved_run
    ds = read_dataset(layout.data_dir)
    dense, _ = read_kernel(layout.kernel_path("trntk", "test"))
    topk = params.model_copy(update={"kernel": params.kernel.model_copy(update={"storage": "topk", "topk": 12})})
    kernel_stage(topk, layout, "trntk", progress=False)
    fit_kglm_stage(topk, layout, "trntk")
    evaluate_stage(topk, layout, "trntk")
    stored = explain(topk, layout, ["trntk"], Query("test-3", ds.test.x[3], int(ds.test.y[3]), 3), 20)["kernels"]
    similar = stored["trntk"]["most_similar"]
    assert len(similar) == 12  # no more than the row stores, whatever top_k asks
    want = np.argsort(-dense[3].astype(np.float32), kind="stable")[:12]
    assert [s["train_id"] for s in similar] == ds.train.ids[want].tolist()
    np.savez(tmp_path / "digit.npz", x=ds.test.x[3])
    new = explain(topk, layout, ["trntk"], Query("digit", load_inputs(tmp_path / "digit.npz", 64)[0], None, None), 20)
    assert [s["train_id"] for s in new["kernels"]["trntk"]["most_similar"]] == [s["train_id"] for s in similar]
    np.testing.assert_allclose(
        new["kernels"]["trntk"]["kglm_probabilities"], stored["trntk"]["kglm_probabilities"], atol=1e-4
    )


def test_bad_input_files_are_refused(tmp_path):
    np.savez(tmp_path / "short.npz", x=np.zeros(10))
    with pytest.raises(KernelscopeError, match="has 10 features per input but the model takes 64"):
        load_inputs(tmp_path / "short.npz", 64)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(KernelscopeError, match="pickled"):
        load_inputs(tmp_path / "objects.npz", 64)
    np.savez(tmp_path / "nan.npz", x=np.full(64, np.nan))
    with pytest.raises(KernelscopeError, match="NaN"):
        load_inputs(tmp_path / "nan.npz", 64)
    with pytest.raises(KernelscopeError, match="not found"):
        load_inputs(tmp_path / "absent.npz", 64)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(KernelscopeError, match="unsupported suffix"):
        load_inputs(tmp_path / "x.csv", 64)


def test_report_contains_every_figure_it_names(saved_run):
    _, layout = saved_run
    result = build_report(layout.root)
    page = (layout.root / "report.html").read_text()
    assert result["figures"], "the report names no figures"
    for figure in result["figures"]:
        name = figure.rsplit("/", 1)[-1]
        assert f'data-figure="{name}"' in page
    assert page.count("data:image/png;base64,") == len(result["figures"])
    assert "comparison/comparison.png" in result["figures"] and "kglm/trntk/probabilities.png" in result["figures"]
    assert "<table>" in page and "trntk" in page
    with pytest.raises(KernelscopeError, match="not a run folder"):
        build_report(layout.root / "kglm")
