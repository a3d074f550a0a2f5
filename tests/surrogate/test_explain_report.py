"""Explain and report on a saved run (tiny model), and refusals of bad input files."""

import json

import numpy as np
import pytest

from kernelscope.core.errors import KernelscopeError
from kernelscope.surrogate.explain import Query, explain, load_inputs
from kernelscope.core.params import params_from_dict
from kernelscope.core.layout import RunLayout
from kernelscope.surrogate.stages import compare_stage, evaluate_stage, fit_kglm_stage
from kernelscope.data.stages import data_stage
from kernelscope.kernels.stages import kernel_stage
from kernelscope.models.stages import train_stage
from kernelscope.surrogate.report import build_report


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from conftest import TINY_PARAMS

    raw = json.loads(json.dumps(TINY_PARAMS))
    raw["datasets"] = ["digits10"]
    raw["kernel"]["kinds"] = ["trntk", "ck"]
    params = params_from_dict(raw)
    layout = RunLayout(tmp_path_factory.mktemp("run") / "digits10")
    data_stage(params, "digits10", layout)
    train_stage(params, layout, progress=False)
    summaries = []
    for kind in params.kernel.kinds:
        kernel_stage(params, layout, kind, progress=False)
        fit_kglm_stage(params, layout, kind)
        summaries.append(evaluate_stage(params, layout, kind).summary)
    compare_stage(params, layout, summaries)
    return params, layout


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
    assert [s["train_id"] for s in from_file["kernels"]["trntk"]["most_similar"]] == [s["train_id"] for s in stored["kernels"]["trntk"]["most_similar"]]
    np.testing.assert_allclose(from_file["kernels"]["trntk"]["kglm_probabilities"], stored["kernels"]["trntk"]["kglm_probabilities"], atol=1e-4)


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
