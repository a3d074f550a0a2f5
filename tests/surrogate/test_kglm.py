import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier

from kernelscope.surrogate.kglm import fit_kglm, load_kglm, save_kglm


def _toy(n_classes: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = rng.integers(0, n_classes, 60)
    x[np.arange(60), y % 5] += 2.0
    k = 0.8 + 0.1 * np.tanh(x @ x.T / 5)  # a kernel with a large common offset, like a trained trNTK
    return k, y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_standardized_fit_is_folded_back_exactly(n_classes):
    k, y = _toy(n_classes)
    model = fit_kglm(k, y, alpha=1e-3, max_iter=500, tol=1e-4, seed=0, standardize=True)
    mean, scale = k.mean(0), k.std(0)
    reference = SGDClassifier(loss="log_loss", penalty="l2", alpha=1e-3, max_iter=500, tol=1e-4, random_state=0)
    reference.fit((k - mean) / scale, y)
    np.testing.assert_allclose(
        model.logits(k), reference.decision_function((k - mean) / scale).reshape(len(k), -1), rtol=1e-9, atol=1e-9
    )
    assert model.weight.shape == (1 if n_classes == 2 else n_classes, len(k))


def test_raw_fit_matches_sklearn_and_is_seeded():
    k, y = _toy(3)
    model = fit_kglm(k, y, alpha=1e-3, max_iter=500, tol=1e-4, seed=1, standardize=False)
    reference = SGDClassifier(loss="log_loss", penalty="l2", alpha=1e-3, max_iter=500, tol=1e-4, random_state=1).fit(
        k, y
    )
    np.testing.assert_allclose(model.logits(k), reference.decision_function(k), rtol=1e-12)
    again = fit_kglm(k, y, alpha=1e-3, max_iter=500, tol=1e-4, seed=1, standardize=False)
    assert np.array_equal(model.weight, again.weight)


@pytest.mark.parametrize("form", ["dense", "top-k (CSR)"])
def test_labels_with_a_missing_class_are_refused_before_fitting(form):
    """W's rows are indexed by class: labels {1, 2} (class 0 absent) would shift every row by one."""
    k, y = _toy(3)
    k = sp.csr_matrix(k) if form != "dense" else k
    with pytest.raises(ValueError, match=r"labels must be 0\.\.C-1, got classes \[1 2\]"):
        fit_kglm(k, np.where(y == 0, 1, y), alpha=1e-3, max_iter=50, tol=1e-4, seed=0)


def test_save_and_load_with_provenance(tmp_path):
    from kernelscope.core.errors import ArtifactError

    k, y = _toy(3)
    model = fit_kglm(k, y, alpha=1e-3, max_iter=100, tol=1e-3, seed=0)
    save_kglm(
        model,
        tmp_path / "kglm.safetensors",
        {"kind": "trntk", "checkpoint_hash": "abc", "converged": str(model.converged)},
    )
    back = load_kglm(tmp_path / "kglm.safetensors", expect={"kind": "trntk"})
    assert np.array_equal(back.weight, model.weight) and np.array_equal(back.bias, model.bias)
    with pytest.raises(ArtifactError, match="checkpoint_hash"):
        load_kglm(tmp_path / "kglm.safetensors", expect={"checkpoint_hash": "other"})
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_kglm(tmp_path / "bad.safetensors")
