import numpy as np
import pytest

from kernelscope.surrogate.attribution import attributions, class_summary, read_attributions, write_attributions
from kernelscope.surrogate.kglm import KGLM, fit_kglm


def _fitted(n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 4))
    y = rng.integers(0, n_classes, 40)
    x[np.arange(40), y % 4] += 2
    k_train = np.tanh(x @ x.T / 4)
    k_query = np.tanh(rng.normal(size=(9, 4)) @ x.T / 4)
    return fit_kglm(k_train, y, alpha=1e-3, max_iter=300, tol=1e-4, seed=0), k_query, y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_attributions_sum_to_the_kglm_logits(n_classes):
    model, k_query, _ = _fitted(n_classes)
    a = attributions(model, k_query)
    assert a.shape == (9, model.weight.shape[0], 40)
    np.testing.assert_allclose(a.sum(axis=2), model.logits(k_query), rtol=1e-12, atol=1e-12)


def test_hand_computed_attribution():
    model = KGLM(weight=np.array([[1.0, -2.0]]), bias=np.array([0.5]))
    a = attributions(model, np.array([[0.5, 0.25]]))
    # W_cj k_j + b/N: 1*0.5 + 0.25 = 0.75; -2*0.25 + 0.25 = -0.25
    np.testing.assert_allclose(a[0, 0], [0.75, -0.25])


def test_stored_attributions_round_trip(tmp_path):
    model, k_query, _ = _fitted(3)
    blocks = [(np.arange(0, 5), k_query[:5]), (np.arange(5, 9), k_query[5:])]
    meta = write_attributions(tmp_path / "a.parquet", model, blocks, np.arange(40), {"kind": "trntk"})
    assert meta["n_query"] == 9 and meta["n_logits"] == 3
    ids, values = zip(*read_attributions(tmp_path / "a.parquet"))
    np.testing.assert_array_equal(np.concatenate(ids), np.arange(9))
    np.testing.assert_allclose(np.concatenate(values), attributions(model, k_query), rtol=1e-6, atol=1e-6)


def test_class_summary_matches_materialized_mean():
    model, k_query, y = _fitted(3)
    summary = class_summary(model, [k_query[:4], k_query[4:]], y, 3)
    a = attributions(model, k_query)  # (q, C_out, N)
    for t in range(3):
        np.testing.assert_allclose(summary[t], a[:, :, y == t].mean(axis=(0, 2)), rtol=1e-10)


def test_top_k_attributions_sum_to_the_logits_of_the_kglm_on_the_top_k_kernel(tmp_path):
    import scipy.sparse as sp

    from kernelscope.kernels.topk import TopkRows
    from kernelscope.surrogate.attribution import read_topk_attributions, write_topk_attributions

    model, k_query, _ = _fitted(3)
    reduced = TopkRows.of(k_query, 6)  # each row's 6 largest entries, as a top-k kernel file holds them
    rows = np.repeat(np.arange(9), 6)
    csr = sp.csr_matrix((reduced.value.ravel(), (rows, reduced.index.ravel())), shape=(9, 40))
    blocks = [(np.arange(0, 5), csr[:5]), (np.arange(5, 9), csr[5:])]
    meta = write_topk_attributions(tmp_path / "a.parquet", model, blocks, np.arange(40), {"kind": "t"}, k=6)
    assert meta["n_query"] == 9 and meta["topk"] == 6
    groups = list(read_topk_attributions(tmp_path / "a.parquet"))
    ids, index, values = (np.concatenate([g[i] for g in groups]) for i in range(3))
    rest = groups[0][3]  # (C_out,) b_c / N
    np.testing.assert_array_equal(ids, np.arange(9))
    dense = attributions(model, csr.toarray())  # (9, C_out, 40): the slow reference on the densified kernel
    for q in range(9):
        assert sorted(index[q].tolist()) == sorted(reduced.index[q].tolist())
        np.testing.assert_allclose(values[q], dense[q][:, index[q]], rtol=1e-6, atol=1e-6)
        others = np.setdiff1d(np.arange(40), index[q])
        np.testing.assert_allclose(dense[q][:, others], np.repeat(rest[:, None], 34, axis=1), rtol=1e-12)
    total = values.sum(axis=2) + (40 - 6) * rest
    np.testing.assert_allclose(total, model.logits(csr), rtol=1e-5, atol=1e-5)
