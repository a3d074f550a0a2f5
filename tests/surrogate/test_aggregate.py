import math

import pytest

from kernelscope.surrogate.aggregate import format_mean_se, mean_se


def test_mean_and_standard_error_by_hand():
    # values 1, 2, 3, 4: mean 2.5; sample std sqrt(5/3); SE = sqrt(5/3) / 2
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)


def test_single_value_and_nans():
    assert math.isnan(mean_se([0.7])[1])
    assert mean_se([0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)
    assert math.isnan(mean_se([])[0])


@pytest.mark.parametrize(
    "mean,se,sign,text",
    [
        (0.7083, 0.0031, False, "0.708(3)"),
        (0.857, 0.007, False, "0.857(7)"),
        (99.641, 0.012, False, "99.64(1)"),
        (0.03, 0.05, True, "+0.03(5)"),
        (-0.2, 0.2, True, "-0.2(2)"),
        (0.5, 0.0096, False, "0.50(1)"),
        (12.3, 2.4, False, "12(2)"),
        (0.5, float("nan"), False, "0.500"),
    ],
)
def test_table_one_format(mean, se, sign, text):
    assert format_mean_se(mean, se, sign=sign) == text
