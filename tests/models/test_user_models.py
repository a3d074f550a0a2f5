"""The registry's ResNet and users' factory models: shapes, kernels against the autograd reference,
weight loading with name and shape checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kernelscope.core.errors import CheckpointError
from kernelscope.kernels import compute_kernel
from kernelscope.models.user_models import build_from_factory, load_weights, read_state_dict, state_dict_differences
from kernelscope.models.zoo import build_model, build_resnet
from tests.support.kernel_reference import trntk0


def test_resnet_shapes_and_rebuild_from_its_record():
    torch.manual_seed(0)
    net = build_resnet((3, 32, 32), 10, widths=(8, 16), blocks=2).eval()
    assert net(torch.randn(5, 3 * 32 * 32)).shape == (5, 10)
    again = build_model({"name": "resnet", "image_shape": [3, 32, 32], "n_outputs": 10, "widths": [8, 16], "blocks": 2})
    assert [k for k in again.state_dict()] == [k for k in net.state_dict()]


def test_trntk0_of_a_resnet_matches_the_autograd_reference():
    """Residual additions, strided 1×1 shortcuts and BatchNorm (eval mode) in the kernel's layer factors."""
    torch.manual_seed(1)
    net = build_resnet((3, 8, 8), 3, widths=(4, 6), blocks=1).double().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine parameters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.randn(6, 3 * 8 * 8, dtype=torch.float64)
    got = compute_kernel(net, x[:3], x[3:], kind="trntk0", chunk_size=2)
    np.testing.assert_allclose(got, trntk0(net, x[:3], x[3:]), rtol=1e-8)


def _factory() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_state_dict_differences_list_every_kind():
    model = _factory()
    weights = {"0.weight": torch.zeros(3, 4), "2.weight": torch.zeros(2, 5), "extra.bias": torch.zeros(1)}
    diff = state_dict_differences(model, weights)
    assert "missing 0.bias (3,)" in diff and "missing 2.bias (2,)" in diff
    assert "unexpected extra.bias (1,)" in diff
    assert "shape of 2.weight: model (2, 3), file (2, 5)" in diff


def test_weights_round_trip_from_safetensors_and_torch_state_dicts(tmp_path):
    torch.manual_seed(2)
    trained = _factory()
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    x = torch.randn(7, 4)
    for name in ("w.safetensors", "w.pt", "ckpt.pth"):
        torch.manual_seed(99)
        loaded = load_weights(_factory(), tmp_path / name)
        torch.testing.assert_close(loaded(x), trained(x))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        read_state_dict(tmp_path / "w.npz")


def test_factory_is_resolved_by_import_path():
    model = build_from_factory("kernelscope.examples.byo:make_net", {"in_features": 5, "hidden": 7, "n_classes": 3})
    assert model(torch.randn(2, 5)).shape == (2, 3)
    with pytest.raises(CheckpointError, match="not a torch.nn.Module"):
        build_from_factory("numpy:zeros", {"shape": 3})
