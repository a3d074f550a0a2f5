"""Seeded subsets: exact sizes, independent of how many are drawn, and bad settings refused."""

import numpy as np
import pytest

from kernelscope.core.errors import ParamsError
from kernelscope.counterfactual.subsets import draw_subsets


def test_subsets_have_the_size_and_are_seeded_per_index():
    masks = draw_subsets(101, 10, 0.5, seed=3)
    assert masks.shape == (10, 101) and (masks.sum(1) == 50).all()  # round(50.5) = 50 (banker's rounding)
    assert np.array_equal(draw_subsets(101, 4, 0.5, seed=3), masks[:4])  # subset k depends on (seed, k) only
    assert not np.array_equal(draw_subsets(101, 4, 0.5, seed=4), masks[:4])
    assert len({m.tobytes() for m in masks}) == 10


@pytest.mark.parametrize(
    ("m", "alpha", "field"),
    [
        (0, 0.5, "counterfactual.m"),
        (5, 1.0, "counterfactual.alpha"),
        (5, 0.0, "counterfactual.alpha"),
        (5, 0.001, "counterfactual.alpha"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(m, alpha, field):
    with pytest.raises(ParamsError, match=field):
        draw_subsets(100, m, alpha, seed=0)
