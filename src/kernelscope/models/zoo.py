"""Model families and the link from logits to class probabilities."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.core.errors import CheckpointError, ParamsError


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


class BasicBlock(nn.Module):
    """conv 3×3 → BN → ReLU → conv 3×3 → BN, plus the input (1×1 conv when the shape changes), → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
                         if stride != 1 or in_ch != out_ch else nn.Identity())
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, in_ch, h, w) -> (b, out_ch, h/stride, w/stride)
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def build_resnet(image_shape: tuple[int, int, int], n_outputs: int, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 1) -> nn.Sequential:
    """A small ResNet for 32×32 images (He et al. 2016, CIFAR layout, narrow): a 3×3 stem, then one stage
    of ``blocks`` basic blocks per width (each stage after the first halves the map), global average
    pooling and the logits. Takes flat inputs (b, c·h·w) like the other models."""
    c, h, w = image_shape
    layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w)), nn.Conv2d(c, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    in_ch = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            layers.append(BasicBlock(in_ch, width, stride=2 if stage > 0 and block == 0 else 1))
            in_ch = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, n_outputs)]
    return nn.Sequential(*layers)


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build an (untrained) registry model from an architecture record derived from params (kernelscope.models.train.architecture)."""
    name = arch.get("name")
    if name == "mlp":
        return build_mlp(int(arch["input_dim"]), list(arch["hidden"]), int(arch["n_outputs"]), str(arch["parameterization"]))
    if name in ("modular_mlp", "modular_transformer"):
        from kernelscope.loss_kernel.multitask import build_modular

        return build_modular("transformer" if name == "modular_transformer" else "mlp", int(arch["p"]), int(arch["embed"]),
                             int(arch["hidden"]), int(arch.get("heads", 4)))
    if name == "cnn":
        return build_cnn(tuple(arch["image_shape"]), int(arch["n_outputs"]), tuple(arch["channels"]), tuple(arch["hidden"]),
                         bool(arch.get("batch_norm", True)))
    if name == "resnet":
        return build_resnet(tuple(arch["image_shape"]), int(arch["n_outputs"]), tuple(arch["widths"]), int(arch["blocks"]))
    # A user's factory is never reached from a record: kernelscope.core.provenance.model_spec builds it from params.
    raise CheckpointError(f"architecture name {name!r} is unknown; expected 'mlp', 'cnn', 'resnet', 'modular_mlp' or 'modular_transformer'.")


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(n, C) logits -> (n, classes) log-probabilities; one logit means sigmoid over two classes."""
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)
    return F.log_softmax(logits, dim=1)


def pick_device(device: str) -> torch.device:
    """The torch device of params.device: 'auto' is CUDA when present, else the CPU; 'cuda' must be present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params: field 'device' is 'cuda', but torch sees no CUDA device on this machine; set device: auto or device: cpu.")
    return torch.device(device)
