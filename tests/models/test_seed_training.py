"""The multi-seed table's training: several seeds of one registry architecture in one call. Stacked (the MLP),
each model is the train stage's model for that seed alone to float32 rounding (a batched matmul of m models
need not round as m single ones do), and the same params give the same bytes again; in turn (the CNN, whose
BatchNorm keeps no stacked step), each checkpoint is the train stage's bytes."""

import pytest
import torch
from safetensors.torch import load_file

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import params_from_dict
from kernelscope.data.stages import data_stage
from kernelscope.models.stages import train_seeds_stage, train_stage

CNN = {"channels": [4, 4], "hidden": [8], "epochs": 1, "batch_size": 32}


@pytest.mark.parametrize(
    ("dataset", "sections", "stacked"),
    [
        ("digits10", {"train": {"hidden": [12, 12], "epochs": 3, "batch_size": 16, "lr": 0.5}}, True),
        ("digits2", {"train": {"hidden": [8], "epochs": 2, "batch_size": 7, "lr": 0.3}}, True),  # binary head
        ("digits10", {"train": {"hidden": [8], "epochs": 2, "optimizer": "adam", "lr": 1e-2}}, True),  # autograd
        ("digits10", {"train": {"arch": "cnn"}, "cnn": CNN}, False),
    ],
)
def test_seed_models_are_the_single_trainings(tmp_path, dataset, sections, stacked):
    params = params_from_dict({"seed": 0, **sections})
    data_stage(params, dataset, RunLayout(tmp_path / "data-run"))
    shared = dict(shared_data=tmp_path / "data-run" / "data", data_seed=0)
    seeds = [3, 4, 5]
    together = train_seeds_stage(params, seeds, [RunLayout(tmp_path / f"seed{s}", **shared) for s in seeds])
    for seed, result in zip(seeds, together):
        alone = train_stage(
            params.model_copy(update={"seed": seed}), RunLayout(tmp_path / f"alone{seed}", **shared), progress=False
        )
        if not stacked:  # the train stage itself: same checkpoint hash, accuracies and final loss
            assert result.summary == alone.summary
            continue
        ours, theirs = (load_file(r.outputs[0].path) for r in (result, alone))  # the weights, then the sidecar
        for name, value in theirs.items():
            torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-5, msg=name)
        assert result.summary["train_accuracy"] == pytest.approx(alone.summary["train_accuracy"], abs=0.01)
        assert result.summary["final_loss"] == pytest.approx(alone.summary["final_loss"], rel=1e-4)
    if stacked:  # deterministic: the same seeds again give the same checkpoints
        again = train_seeds_stage(params, seeds, [RunLayout(tmp_path / f"again{s}", **shared) for s in seeds])
        assert [r.summary for r in again] == [r.summary for r in together]
