"""The counterfactual stage on a tiny run: the LDS table, verified score files, cached blocks, and refusals."""

import csv
from pathlib import Path

import numpy as np
import pytest

from kernelscope.core.errors import ArtifactError
from kernelscope.core.tensor_artifacts import read_safetensors, write_safetensors
from kernelscope.counterfactual.datamodels import ARTIFACT
from kernelscope.counterfactual.lds import lds_per_query
from kernelscope.counterfactual.stages import SCORES_ARTIFACT, counterfactual_stage, lds_stage, scores_path
from kernelscope.data.datasets import read_dataset
from kernelscope.kernels.store import read_kernel
from kernelscope.surrogate.report import build_report
from tests.support.cli import cli_args, edit_params, refused

STAGES = ("data", "train", "kernel", "kglm")
CF = {
    "attributors": ["grad_dot", "grad_cos", "tracin", "trak", "ekfac", "kglm:trntk", "kernel:trntk"],
    "m": 6,
    "models_per_stack": 4,
    "projection_dim": 64,
    "trak_models": 2,
    "tracin_every": 5,
    "bootstrap": 50,
    "brittleness_queries": 3,
    "brittleness_k": [5, 30],
    "mislabel_fraction": 0.2,
}


def test_lds_table_scores_and_cached_blocks(tiny_run):
    run = tiny_run(STAGES)
    params = run.params_with(counterfactual=CF)
    summary = counterfactual_stage(params, run.layout).summary
    out = run.layout.counterfactual_dir
    with open(out / "lds.csv") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["attributor", "lds", "ci_low", "ci_high", "seconds"]
    assert sorted(r["attributor"] for r in table) == sorted(CF["attributors"])
    for row in table:
        assert -1 <= float(row["ci_low"]) <= float(row["lds"]) <= float(row["ci_high"]) <= 1
        assert float(row["seconds"]) >= 0
    assert (out / "lds.png").stat().st_size > 0 and (out / "lds_vs_cost.png").stat().st_size > 0
    report = build_report(run.layout.root)  # the HTML report gains the table and both figures
    assert {"counterfactual/lds.png", "counterfactual/lds_vs_cost.png"} <= set(report["figures"])
    assert "Counterfactual evaluation" in Path(report["path"]).read_text()

    with open(out / "brittleness.csv") as handle:
        brittle = list(csv.DictReader(handle))
    assert list(brittle[0]) == ["attributor", "k", "flipped", "ci_low", "ci_high"]
    assert {(r["attributor"], int(r["k"])) for r in brittle} == {
        (name, k) for name in [*CF["attributors"], "random"] for k in CF["brittleness_k"]
    }
    assert all(0 <= float(r["flipped"]) <= 1 for r in brittle) and summary["queries"] == 3

    with open(out / "mislabel.csv") as handle:
        mislabel = {r["attributor"]: r for r in csv.DictReader(handle)}
    assert list(next(iter(mislabel.values()))) == [
        "attributor",
        "auc",
        "ci_low",
        "ci_high",
        "found_top10",
        "found_top20",
        "seconds",
    ]
    assert set(mislabel) == set(CF["attributors"]) and (out / "mislabel.png").stat().st_size > 0
    n_train = len(read_dataset(run.layout.data_dir).train.y)
    assert summary["flipped"] == round(0.2 * n_train)
    for name, row in mislabel.items():
        assert 0 <= float(row["ci_low"]) <= float(row["auc"]) <= float(row["ci_high"]) <= 1
        assert 0 <= float(row["found_top10"]) <= float(row["found_top20"]) <= 1
    for constant in ("grad_cos", "kernel:trntk"):  # self-similarity 1 for every point: chance by construction
        assert float(mislabel[constant]["auc"]) == 0.5
    assert float(mislabel["grad_dot"]["auc"]) > 0.7  # memorized flips have large self-influence

    # the LDS recomputed from the stored, verified scores and retrained blocks is the table's
    blocks = sorted((out / "retrain").glob("*/block-*.safetensors"))
    assert len(blocks) == 2  # 6 models in stacks of 4
    arrays = [read_safetensors(path, ARTIFACT)[0] for path in blocks]
    masks = np.concatenate([a["masks"] for a in arrays]).astype(bool)
    outputs = np.concatenate([a["outputs"] for a in arrays])
    assert masks.shape[0] == 6 and (masks.sum(1) == masks.sum(1)[0]).all()  # every subset of round(α N)
    ds_ids = read_kernel(scores_path(run.layout, "grad_dot"), artifact=SCORES_ARTIFACT)[1]["train_ids"]
    assert masks.shape[1] == len(ds_ids)
    for row in summary["lds"]:
        values, meta = read_kernel(scores_path(run.layout, row["attributor"]), artifact=SCORES_ARTIFACT)
        assert meta["attributor"] == row["attributor"]
        assert np.nanmean(lds_per_query(values.astype(np.float64), masks, outputs)) == pytest.approx(
            row["lds"], abs=1e-3
        )

    # a second table reuses every block (not retrained) and is the same
    stamps = [p.stat().st_mtime_ns for p in blocks]
    again = lds_stage(params, run.layout).summary
    assert [p.stat().st_mtime_ns for p in blocks] == stamps
    assert [r["lds"] for r in again["lds"]] == pytest.approx([r["lds"] for r in summary["lds"]], abs=1e-3)

    # a block from another dataset in the cache is refused, naming the file and the field
    tensors, meta = read_safetensors(blocks[0], ARTIFACT)
    provenance = {k: v for k, v in meta.items() if k not in ("artifact", "format", "version")}
    write_safetensors(blocks[0], tensors, ARTIFACT, {**provenance, "dataset_hash": "0" * 64})
    with pytest.raises(ArtifactError, match=r"block-0000\.safetensors.*'dataset_hash'"):
        counterfactual_stage(params, run.layout)


@pytest.mark.parametrize(
    ("section", "fragments"),
    [
        ({"m": 0}, ("counterfactual.m",)),
        ({"alpha": 1.5}, ("counterfactual.alpha",)),
        ({"attributors": ["influence"]}, ("counterfactual.attributors", "attributor")),
        ({"attributors": ["kglm:ck"]}, ("counterfactual.attributors", "kernel.kinds")),
    ],
)
def test_bad_settings_are_refused_in_one_sentence(tiny_run, capsys, section, fragments):
    run = tiny_run(("data", "train"))
    edit_params(run.root, lambda raw: raw.update(counterfactual={**CF, **section}))
    refused(cli_args(run.root, ["counterfactual"]), capsys, *fragments)


def test_brittleness_stacks_as_separate_stages_give_the_one_stage_table(tiny_run, monkeypatch):
    from kernelscope.counterfactual import brittleness_stages
    from kernelscope.counterfactual.brittleness_stages import (
        BRITTLENESS_ARTIFACT,
        brittleness_plan_stage,
        brittleness_stack_stage,
        brittleness_stage,
    )
    from kernelscope.counterfactual.stages import attribute_stage

    cf = {
        "attributors": ["grad_dot", "kernel:trntk"],
        "projection_dim": 32,
        "bootstrap": 20,
        "brittleness_queries": 2,
        "brittleness_k": [5, 20],
        "models_per_stack": 2,
        "mislabel_fraction": 0.0,
    }
    alone, split = tiny_run(STAGES), tiny_run(STAGES)
    for run in (alone, split):
        for name in cf["attributors"]:
            attribute_stage(run.params_with(counterfactual=cf), run.layout, name)
    expected = brittleness_stage(alone.params_with(counterfactual=cf), alone.layout).summary

    params = split.params_with(counterfactual=cf)
    plan = brittleness_plan_stage(params, split.layout).summary["stacks"]
    assert [k for k, _ in plan] == [5, 20] and all(count == 3 for _, count in plan)  # 6 jobs in stacks of 2
    files = [brittleness_stack_stage(params, split.layout, k, b).outputs[0] for k, count in plan for b in range(count)]
    assert len({f.path for f in files}) == 6

    def no_training(*args, **kwargs):
        raise AssertionError("a stack trained again")

    monkeypatch.setattr(brittleness_stages, "stack_wrong", no_training)
    assert brittleness_stage(params, split.layout).summary == expected  # read back, the same table

    arrays, meta = read_safetensors(files[0].path, BRITTLENESS_ARTIFACT)
    arrays["wrong"] = 1 - arrays["wrong"]  # flipped verdicts under the old provenance: a rewritten, valid file
    tampered = {**meta, "queries": [0, 1]}
    write_safetensors(files[0].path, arrays, BRITTLENESS_ARTIFACT, tampered)
    with pytest.raises(ArtifactError, match="queries"):
        brittleness_stage(params, split.layout)
