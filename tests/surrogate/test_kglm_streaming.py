"""The streamed kGLM fit: column moments against numpy, and a fit from row blocks that predicts like the in-memory
one without ever holding the kernel."""

import numpy as np
import pytest

from kernelscope.surrogate.kglm import fit_kglm
from kernelscope.surrogate.kglm_streaming import column_moments, fit_kglm_streaming


def _kernel_and_labels(n: int = 120, classes: int = 3):
    """A cosine kernel of noisy class-centred features: values in a narrow band, as real NTK kernels."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, 20))
    x = 3.0 + centres[y] + 0.8 * rng.standard_normal((n, 20))  # the offset keeps every cosine near 1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T, y


def _passes(kernel: np.ndarray, rows: int, seen: list[int]):
    def one_pass():
        for start in range(0, len(kernel), rows):
            seen.append(min(rows, len(kernel) - start))
            yield np.arange(start, min(start + rows, len(kernel))), kernel[start : start + rows]

    return one_pass


def test_column_moments_match_numpy_in_a_narrow_band():
    kernel, _ = _kernel_and_labels()
    mean, std, rows = column_moments(_passes(kernel, 32, []), len(kernel))
    assert rows == len(kernel)
    np.testing.assert_allclose(mean, kernel.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, kernel.std(axis=0), rtol=1e-9)


def test_streamed_fit_predicts_like_the_in_memory_fit_from_blocks_only():
    kernel, y = _kernel_and_labels()
    seen: list[int] = []
    streamed = fit_kglm_streaming(_passes(kernel, 32, seen), y, alpha=1e-3, epochs=30, tol=1e-3, seed=0)
    assert max(seen) == 32  # never more than one block at a time
    whole = fit_kglm(kernel, y, alpha=1e-3, max_iter=1000, tol=1e-3, seed=0)
    agree = (streamed.logits(kernel).argmax(1) == whole.logits(kernel).argmax(1)).mean()
    assert (streamed.logits(kernel).argmax(1) == y).mean() > 0.9 and agree > 0.9
    again = fit_kglm_streaming(_passes(kernel, 32, []), y, alpha=1e-3, epochs=30, tol=1e-3, seed=0)
    assert np.array_equal(again.weight, streamed.weight)  # seeded: the same bytes


def test_streamed_fit_refuses_bad_labels_and_non_finite_rows():
    kernel, y = _kernel_and_labels()
    with pytest.raises(ValueError, match="0..C-1"):
        fit_kglm_streaming(_passes(kernel, 32, []), y + 1, alpha=1e-3, epochs=2, tol=1e-3, seed=0)
    kernel[5, 7] = np.inf
    with pytest.raises(Exception, match="NaN or inf"):
        fit_kglm_streaming(_passes(kernel, 32, []), y, alpha=1e-3, epochs=2, tol=1e-3, seed=0, standardize=False)
