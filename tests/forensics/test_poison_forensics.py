import numpy as np
import pytest

from kernelscope.core.errors import KernelscopeError
from kernelscope.data.datasets import make_digits
from kernelscope.forensics.detection import flag_by_neighbours, precision_recall, trace_back, trace_back_scores
from kernelscope.forensics.poison import Trigger, attack_success_rate, badnets, stamp


def test_trigger_is_exact_to_the_pixel():
    x = np.zeros((2, 64), dtype=np.float32)
    out = stamp(x, (8, 8), Trigger())  # default on 8x8: 2x2 square, margin 0, bottom-right
    img = out.reshape(2, 8, 8)
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[6:8, 6:8] = 1.0
    assert np.array_equal(img[0], expected) and np.array_equal(img[1], expected)
    assert np.array_equal(x, np.zeros((2, 64)))  # input untouched

    big = stamp(np.zeros((1, 32 * 32), np.float32), (32, 32), Trigger()).reshape(32, 32)
    assert big[25:29, 25:29].min() == 1.0 and big.sum() == 16  # Shan et al.: 4x4, 3-pixel margin on 32x32
    checker = stamp(
        np.zeros((1, 64), np.float32), (8, 8), Trigger(size=3, margin=1, value=0.5, pattern="checker")
    ).reshape(8, 8)
    assert checker[4, 4] == 0.5 and checker[4, 5] == 0.0 and checker[6, 6] == 0.5 and checker.sum() == 0.5 * 5
    with pytest.raises(KernelscopeError, match="does not fit"):
        Trigger(size=8, margin=1).resolved(8, 8)


def test_poison_fraction_labels_and_seed():
    ds = make_digits("digits10", 0.3, seed=0)
    a = badnets(ds, fraction=0.1, target=3, trigger=Trigger(), seed=7)
    b = badnets(ds, fraction=0.1, target=3, trigger=Trigger(), seed=7)
    c = badnets(ds, fraction=0.1, target=3, trigger=Trigger(), seed=8)
    assert np.array_equal(a.is_poisoned, b.is_poisoned) and not np.array_equal(a.is_poisoned, c.is_poisoned)
    assert a.is_poisoned.sum() == round(0.1 * len(ds.train.y))
    assert np.all(ds.train.y[a.is_poisoned] != 3)  # chosen among non-target points
    assert np.all(a.dataset.train.y[a.is_poisoned] == 3)
    assert np.array_equal(a.dataset.train.y[~a.is_poisoned], ds.train.y[~a.is_poisoned])
    assert np.array_equal(a.dataset.train.x[~a.is_poisoned], ds.train.x[~a.is_poisoned])
    stamped = a.dataset.train.x[a.is_poisoned].reshape(-1, 8, 8)
    assert np.all(stamped[:, 6:8, 6:8] == 1.0)
    assert np.array_equal(a.dataset.test.x, ds.test.x)  # the clean test set is clean
    assert np.array_equal(a.test_poisoned.y, ds.test.y)
    assert np.array_equal(a.test_is_target_class, ds.test.y == 3)
    assert attack_success_rate(np.array([3, 3, 1, 3]), np.array([0, 3, 1, 2]), 3) == pytest.approx(2 / 3)


def test_k_of_m_rule_on_a_hand_made_similarity_matrix():
    poisoned = np.array([True, True, True, False, False, False])
    sims = np.array(
        [
            [0.9, 0.8, 0.7, 0.1, 0.2, 0.3],  # top-3 all poisoned -> flag
            [0.9, 0.1, 0.2, 0.8, 0.7, 0.3],  # top-3: 0 (p), 3, 4 -> 1 of 3 -> no flag
            [0.9, 0.85, 0.1, 0.8, 0.2, 0.3],  # top-3: 0 (p), 1 (p), 3 -> 2 of 3 -> flag when m = 2
        ]
    )
    np.testing.assert_array_equal(flag_by_neighbours(sims, poisoned, k=3, m=2), [True, False, True])
    np.testing.assert_array_equal(flag_by_neighbours(sims, poisoned, k=3, m=3), [True, False, False])
    with pytest.raises(ValueError):
        flag_by_neighbours(sims, poisoned, k=3, m=4)


def test_nearest_points_of_a_top_k_kernel_are_the_dense_ones():
    import scipy.sparse as sp

    from kernelscope.core.errors import KernelscopeError
    from kernelscope.forensics.detection import top_k_indices

    dense = np.array([[0.2, 0.9, 0.9, -0.1, 0.0], [-0.5, -0.2, -0.3, -0.9, -0.4]])
    # Its top-4 kernel: each row's smallest entry (column 3) not stored. Read as 0, column 3 would outrank every
    # stored entry of the second row; a stored 0.0 (row one, column 4) is an entry like any other.
    values = np.array([0.2, 0.9, 0.9, 0.0, -0.5, -0.2, -0.3, -0.4])
    csr = sp.csr_matrix((values, np.array([0, 1, 2, 4, 0, 1, 2, 4]), np.array([0, 4, 8])), shape=(2, 5))
    np.testing.assert_array_equal(top_k_indices(csr, 4), top_k_indices(dense, 4))
    np.testing.assert_array_equal(top_k_indices(csr, 2), [[1, 2], [1, 2]])  # ties: lower column first
    with pytest.raises(KernelscopeError, match="kernel.topk"):
        top_k_indices(csr, 5)
    np.testing.assert_allclose(trace_back_scores(csr[:1], csr[1:]), (csr[0] - csr[1]).toarray().ravel())


def test_precision_recall_hand_counted():
    flagged = np.array([1, 1, 0, 0, 1], bool)
    truth = np.array([1, 0, 1, 0, 1], bool)
    pr = precision_recall(flagged, truth)  # TP 2, FP 1, FN 1
    assert (pr.tp, pr.fp, pr.fn) == (2, 1, 1)
    assert pr.precision == pytest.approx(2 / 3) and pr.recall == pytest.approx(2 / 3)
    none = precision_recall(np.zeros(4, bool), np.zeros(4, bool))  # no positives and no flags
    assert np.isnan(none.precision) and np.isnan(none.recall)
    missed = precision_recall(np.zeros(3, bool), np.array([1, 0, 0], bool))
    assert np.isnan(missed.precision) and missed.recall == 0.0


def test_trace_back_ranks_the_poison_first():
    poisoned = np.array([False, True, False, True])
    k_flagged = np.array([[0.5, 0.9, 0.6, 0.8], [0.5, 0.7, 0.6, 0.9]])
    k_unflagged = np.array([[0.6, 0.1, 0.9, 0.2]])
    scores = trace_back_scores(k_flagged, k_unflagged)
    result = trace_back(scores, poisoned)
    assert result["precision_at_p"] == 1.0 and result["recall_at_p"] == 1.0 and result["n_poisoned"] == 2


def test_end_to_end_detection_is_far_above_chance(tmp_path):
    from kernelscope.core.layout import RunLayout
    from kernelscope.core.params import params_from_dict
    from kernelscope.forensics.stages import (
        detection_stage,
        forensic_kernel_stage,
        forensic_kglm_stage,
        poison_stage,
        poisoned_train_stage,
    )

    params = params_from_dict(
        {
            "seed": 1,
            "device": "cpu",
            "train": {"hidden": [32, 32], "epochs": 40},
            "kernel": {"chunk_size": 256},
            "poison": {"kinds": ["trntk", "ck"]},
        }
    )
    layout = RunLayout(tmp_path / "digits10")
    data = poison_stage(params, layout).summary
    trained = poisoned_train_stage(params, layout).summary
    assert trained["attack_success_rate"] > 0.8
    faith = []
    for kind in params.poison.kinds:
        forensic_kernel_stage(params, layout, kind)
        faith.append(forensic_kglm_stage(params, layout, kind).summary)
    result = detection_stage(params, layout, faith).summary
    trntk = next(r for r in result["rows"] if r["kernel"] == "trntk")
    assert trntk["precision"] > 0.9 and trntk["recall"] > 0.8  # chance: precision 0.5
    assert trntk["trace_precision"] > 0.5  # chance: 10%
    assert data["n_poisoned"] == round(0.1 * data["n_train"])
    assert (layout.root / "forensics" / "table3.md").read_text().count("|") > 20
    assert (layout.root / "forensics" / "trace_back_pr.png").exists() and (
        layout.root / "forensics" / "neighbours_trntk.png"
    ).exists()

    # The same run with top-k kernels (kernel.storage: topk): the same nearest points, so the same flags.
    topk = params.model_copy(
        update={
            "kernel": params.kernel.model_copy(update={"storage": "topk", "topk": 40}),
            "poison": params.poison.model_copy(update={"kinds": ["trntk"]}),
        }
    )
    forensic_kernel_stage(topk, layout, "trntk")
    sparse = detection_stage(topk, layout, [forensic_kglm_stage(topk, layout, "trntk").summary]).summary["rows"][0]
    for key in ("precision", "recall", "tp", "fp", "fn"):
        assert sparse[key] == trntk[key], key
    assert sparse["trace_precision"] > 0.5  # from the stored entries only, still far above chance
