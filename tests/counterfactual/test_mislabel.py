"""Mislabel detection: the seeded label flips, ROC-AUC and the fraction found against hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kernelscope.counterfactual.lds import bootstrap_statistic
from kernelscope.counterfactual.mislabel import flip_labels, found_fraction, roc_auc, self_scores


def test_flip_labels_moves_a_seeded_tenth_to_other_classes():
    y = np.arange(200) % 10
    noisy, flipped = flip_labels(y, 10, 0.1, seed=4)
    assert flipped.sum() == 20
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert noisy.min() >= 0 and noisy.max() <= 9
    again, same = flip_labels(y, 10, 0.1, seed=4)
    assert np.array_equal(again, noisy) and np.array_equal(same, flipped)
    assert not np.array_equal(flip_labels(y, 10, 0.1, seed=5)[1], flipped)
    binary, moved = flip_labels(np.zeros(30, dtype=int), 2, 0.2, seed=0)
    assert moved.sum() == 6 and (binary[moved] == 1).all()


def test_roc_auc_by_hand_and_against_scikit_learn():
    # positives 0.9, 0.4; negatives 0.8, 0.3, 0.1: pairs won 3 + 2 of 6
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.1])
    positive = np.array([True, False, True, False, False])
    assert roc_auc(scores, positive) == pytest.approx(5 / 6)
    # a tie between a positive and a negative counts one half
    assert roc_auc(np.array([1.0, 1.0, 0.0]), np.array([True, False, False])) == pytest.approx(0.75)
    assert roc_auc(np.ones(4), np.array([True, False, True, False])) == 0.5
    rng = np.random.default_rng(0)
    s, p = rng.normal(size=300).round(1), rng.random(300) < 0.2  # rounded: many ties
    assert roc_auc(s, p) == pytest.approx(roc_auc_score(p, s))
    assert np.isnan(roc_auc(s, np.zeros(300, dtype=bool)))


def test_found_fraction_counts_a_tie_at_the_cut_by_its_expected_share():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    positive = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 1], dtype=bool)
    assert found_fraction(scores, positive, 0.2) == pytest.approx(1 / 4)  # top 2: one of four positives
    assert found_fraction(scores, positive, 0.3) == pytest.approx(2 / 4)
    # top 7: five above the cut (two positives) + 2 of the 5 tied zeros, which hold 2 positives: 2/5 · 2
    assert found_fraction(scores, positive, 0.7) == pytest.approx((2 + 2 / 5 * 2) / 4)
    assert found_fraction(np.zeros(10), positive, 0.5) == pytest.approx(0.5)  # all tied: the inspected share


def test_self_scores_take_the_diagonal_and_tie_what_is_equal_up_to_rounding():
    scores = np.array([[3.0, 1.0], [0.5, 2.0]])
    assert self_scores(scores).tolist() == [3.0, 2.0]
    cosine = np.eye(4) * (1 + np.array([1e-8, -2e-8, 0.0, 3e-8]))
    assert np.ptp(self_scores(cosine)) == 0.0


def test_bootstrap_statistic_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(1)
    scores, positive = rng.normal(size=200), rng.random(200) < 0.3
    scores[positive] += 1.0

    def stat(rows):
        return roc_auc(scores[rows], positive[rows])

    ci = bootstrap_statistic(stat, 200, seed=0, resamples=200)
    assert ci.low <= ci.mean <= ci.high and ci.mean == pytest.approx(roc_auc(scores, positive))
    assert bootstrap_statistic(stat, 200, seed=0, resamples=200) == ci
    assert 0.6 < ci.low and ci.high < 0.95


def test_noisy_run_gradients_one_pass_for_both_sides_match_the_general_run():
    import dataclasses

    from kernelscope.core.param_sections import TrainParams
    from kernelscope.core.params import params_from_dict
    from kernelscope.counterfactual.attributors import Run, attribute
    from kernelscope.counterfactual.mislabel import NoisyRun
    from kernelscope.data.datasets import make_digits
    from kernelscope.models.checkpoint import Checkpoint
    from kernelscope.models.train import train_classifier

    ds = make_digits("digits2", 0.3, 0)
    ds = dataclasses.replace(ds, test=ds.train)  # what noisy_run builds: queries are the training points
    model = train_classifier(ds, TrainParams(hidden=(8,), epochs=2, lr=0.5), 0, progress=False).model
    params = params_from_dict({"counterfactual": {"projection_dim": 32}})
    checkpoint = Checkpoint(model, {"weights_sha256": "0" * 64})
    noisy = NoisyRun(params, None, ds, checkpoint)
    general = Run(params, None, ds, checkpoint)
    for name in ("grad_dot", "grad_cos"):
        assert np.allclose(attribute(noisy, name).values, attribute(general, name).values, rtol=1e-12, atol=1e-12)
    assert noisy.gradients(model, noisy.projector())[0] is noisy.gradients(model, noisy.projector())[1]


def test_noisy_run_keeps_tracin_checkpoints_equal_to_a_replay_of_its_training():
    import torch

    from kernelscope.core.params import params_from_dict
    from kernelscope.counterfactual.attributors import Run, attribute
    from kernelscope.counterfactual.mislabel import noisy_run
    from kernelscope.data.datasets import make_digits
    from kernelscope.models.checkpoint import Checkpoint

    ds = make_digits("digits2", 0.3, 0)
    params = params_from_dict(
        {"train": {"hidden": [8], "epochs": 4}, "counterfactual": {"tracin_every": 2, "projection_dim": 32}}
    )
    unused = Checkpoint(torch.nn.Linear(1, 1), {"weights_sha256": "0" * 64})  # noisy_run trains its own model
    noisy, _ = noisy_run(Run(params, None, ds, unused), 0.1)
    kept = noisy.tracin_checkpoints()
    replayed = Run.tracin_checkpoints(noisy)  # the general path: train again on the noisy labels, seeded
    assert [lr for lr, _ in kept] == [lr for lr, _ in replayed] and len(kept) == 2
    for (_, ours), (_, theirs) in zip(kept, replayed):
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name
    # Same checkpoints; the scores to rounding: the noisy run takes its gradients once (queries = training
    # points), the general path twice, and MKL's results can depend on the arrays' memory alignment (1e-16 on an
    # AVX-512 machine, bit-equal on others).
    ours, general = attribute(noisy, "tracin").values, attribute(Run(*_fields(noisy)), "tracin").values
    np.testing.assert_allclose(ours, general, rtol=1e-12, atol=1e-12)


def _fields(run):
    return run.params, run.layout, run.dataset, run.checkpoint
