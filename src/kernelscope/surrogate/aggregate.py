"""Multi-seed summaries in the NTK-surrogate paper's Table 1 format: mean(standard error), e.g. 0.708(3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std with ddof = 1, over sqrt(n)); NaNs are dropped."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def format_mean_se(mean: float, se: float, sign: bool = False, default_decimals: int = 3) -> str:
    """'0.708(3)': the mean rounded at the standard error's leading digit, that digit in parentheses."""
    if math.isnan(mean):
        return "n/a"
    plus = "+" if sign else ""
    if math.isnan(se) or se <= 0:
        return f"{mean:{plus}.{default_decimals}f}"
    decimals = -math.floor(math.log10(se))
    digit = round(se * 10**decimals)
    if digit == 10:  # e.g. 0.0096 rounds to 0.01
        decimals, digit = decimals - 1, 1
    if decimals <= 0:
        return f"{round(mean, decimals):{plus}.0f}({digit * 10 ** (-decimals)})"
    return f"{mean:{plus}.{decimals}f}({digit})"
