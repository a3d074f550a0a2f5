"""Model families and the link from logits to class probabilities."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.errors import CheckpointError


class ScaledLinear(nn.Linear):
    """y = W (s·a) + b. With s = 1/sqrt(fan_in) and N(0, 1) weights this is the NTK parameterization.

    Keeping the layer an ``nn.Linear`` (the scale is applied to its input) lets kernel code treat it
    as any linear layer whose input activation is s·a.
    """

    def __init__(self, in_features: int, out_features: int, ntk: bool) -> None:
        super().__init__(in_features, out_features)
        self.scale = 1.0 / math.sqrt(in_features) if ntk else 1.0
        if ntk:
            nn.init.normal_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale:.4g}"


def n_outputs_for(n_classes: int) -> int:
    """Two classes use one logit with a sigmoid link (as in the paper's MNIST2 MLP)."""
    return 1 if n_classes == 2 else n_classes


def build_mlp(input_dim: int, hidden: list[int] | tuple[int, ...], n_outputs: int, parameterization: str = "ntk") -> nn.Sequential:
    ntk = parameterization == "ntk"
    widths = [input_dim, *hidden]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [ScaledLinear(fan_in, fan_out, ntk), nn.ReLU()]
    layers.append(ScaledLinear(widths[-1], n_outputs, ntk))  # no final activation: logits
    return nn.Sequential(*layers)


def build_cnn(image_shape: tuple[int, int, int], n_outputs: int, channels: tuple[int, ...] = (8, 8, 16, 24, 32, 48),
              hidden: tuple[int, ...] = (256, 256), batch_norm: bool = True) -> nn.Sequential:
    """The NTK-surrogate paper's small CNN (its App. K.2.2), sized for small images.

    Sections of (conv 3×3 → BatchNorm → ReLU → conv 3×3 stride 2 → ReLU), one per pair of
    ``channels``, each halving the feature map; then fully connected layers ``hidden`` and the
    logits. Takes flat inputs (b, c·h·w) like the MLP.
    """
    c, h, w = image_shape
    layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
    in_ch = c
    for first, second in zip(channels[0::2], channels[1::2]):
        layers += [nn.Conv2d(in_ch, first, 3, padding=1)]
        layers += [nn.BatchNorm2d(first)] if batch_norm else []
        layers += [nn.ReLU(), nn.Conv2d(first, second, 3, padding=1, stride=2), nn.ReLU()]
        in_ch = second
        h, w = (h + 1) // 2, (w + 1) // 2
    layers.append(nn.Flatten())
    widths = [in_ch * h * w, *hidden]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], n_outputs))
    return nn.Sequential(*layers)


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build an (untrained) model from the architecture record stored in a checkpoint sidecar."""
    name = arch.get("name")
    if name == "mlp":
        return build_mlp(int(arch["input_dim"]), list(arch["hidden"]), int(arch["n_outputs"]), str(arch["parameterization"]))
    if name == "modular_mlp":
        from kernelscope.modular import ModularMLP

        return ModularMLP(int(arch["p"]), int(arch["embed"]), int(arch["hidden"]))
    if name == "cnn":
        return build_cnn(tuple(arch["image_shape"]), int(arch["n_outputs"]), tuple(arch["channels"]), tuple(arch["hidden"]),
                         bool(arch.get("batch_norm", True)))
    raise CheckpointError(f"architecture name {name!r} is unknown; expected 'mlp' or 'cnn'.")


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(n, C) logits -> (n, classes) log-probabilities; one logit means sigmoid over two classes."""
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)
    return F.log_softmax(logits, dim=1)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
