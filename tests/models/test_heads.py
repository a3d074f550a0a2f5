"""Output heads: per-sample losses."""

import pytest


def test_precise_per_sample_loss_resolves_losses_below_float32_spacing():
    import math

    import torch

    from kernelscope.models.heads import per_sample_loss, precise_per_sample_loss

    logits = torch.tensor([[20.0, 0.0, 0.0, 0.0], [18.0, 0.0, 0.0, 0.0]])  # float32, margins 20 and 18
    y = torch.tensor([0, 0])
    exact = [math.log1p(3 * math.exp(-20.0)), math.log1p(3 * math.exp(-18.0))]  # 6.2e-9, 4.6e-8
    assert per_sample_loss(logits, y).tolist() == [0.0, 0.0]  # both below float32's spacing at 20 and 18
    precise = precise_per_sample_loss(logits, y)
    assert precise.dtype == torch.float64 and precise.tolist() == pytest.approx(exact, rel=1e-6)
