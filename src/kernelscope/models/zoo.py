"""Model families and the MODELS registry: each architecture's params section, record and builder."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.core.errors import ArtifactError, CheckpointError, ParamsError
from kernelscope.core.param_sections import CNNParams, ResNetParams, TrainParams
from kernelscope.data.datasets import Dataset
from kernelscope.models.heads import n_outputs_for


class ScaledLinear(nn.Linear):
    """y = W (s·a) + b. With s = 1/sqrt(fan_in) and N(0, 1) weights this is the NTK parameterization.

    Keeping the layer an ``nn.Linear`` (the scale is applied to its input) lets kernel code treat it
    as any linear layer whose input activation is s·a.
    """

    def __init__(self, in_features: int, out_features: int, ntk: bool) -> None:
        super().__init__(in_features, out_features)
        self.scale = 1.0 / math.sqrt(in_features) if ntk else 1.0
        if ntk and not self.weight.is_meta:  # on meta (counting parameters) init would import torch._dynamo: 2 s
            nn.init.normal_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale:.4g}"


def build_mlp(
    input_dim: int, hidden: list[int] | tuple[int, ...], n_outputs: int, parameterization: str = "ntk"
) -> nn.Sequential:
    ntk = parameterization == "ntk"
    widths = [input_dim, *hidden]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [ScaledLinear(fan_in, fan_out, ntk), nn.ReLU()]
    layers.append(ScaledLinear(widths[-1], n_outputs, ntk))  # no final activation: logits
    return nn.Sequential(*layers)


def build_cnn(
    image_shape: tuple[int, int, int],
    n_outputs: int,
    channels: tuple[int, ...] = (8, 8, 16, 24, 32, 48),
    hidden: tuple[int, ...] = (256, 256),
    batch_norm: bool = True,
) -> nn.Sequential:
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
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, in_ch, h, w) -> (b, out_ch, h/stride, w/stride)
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def build_resnet(
    image_shape: tuple[int, int, int], n_outputs: int, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 1
) -> nn.Sequential:
    """A small ResNet for 32×32 images (He et al. 2016, CIFAR layout, narrow): a 3×3 stem, then one stage
    of ``blocks`` basic blocks per width (each stage after the first halves the map), global average
    pooling and the logits. Takes flat inputs (b, c·h·w) like the other models."""
    c, h, w = image_shape
    layers: list[nn.Module] = [
        nn.Unflatten(1, (c, h, w)),
        nn.Conv2d(c, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    in_ch = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            layers.append(BasicBlock(in_ch, width, stride=2 if stage > 0 and block == 0 else 1))
            in_ch = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, n_outputs)]
    return nn.Sequential(*layers)


def channels_first(dataset: Dataset, arch: str) -> list[int]:
    """(c, h, w) of the dataset's images: (h, w) means one channel; flat vectors cannot feed a convolution."""
    shape = list(dataset.image_shape)
    if len(shape) == 2:
        return [1, *shape]
    if len(shape) == 3:
        return shape
    raise ArtifactError(
        f"dataset {dataset.name!r} holds flat vectors of shape {tuple(shape)}, and the {arch} needs "
        "images; set data.image_shape of its source to (channels, height, width), or use the mlp."
    )


@dataclass(frozen=True)
class ModelEntry:
    """An architecture of the registry: where its settings live, its record for a dataset, its builder from the record.

    The record (the checkpoint sidecar's ``architecture``, JSON) is ``{"name": ..., **record(data, section,
    n_outputs)}``; its keys and values are part of every checkpoint's identity, so an entry's record never changes.
    """

    section: str  # the params.yaml section (a field of Params) of its settings
    params: type  # that section's class
    record: Callable[[Dataset, Any, int], dict[str, Any]]  # (data, section, n_outputs) -> the record after its name
    build: Callable[[dict[str, Any]], nn.Module]  # the record -> an untrained model


# The dataset classifiers trainable here (train.arch, table.archs, sources.<name>.model.registry); a new one is an
# entry plus its params section.
MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(
        "train",
        TrainParams,
        lambda ds, p, n_out: {
            "input_dim": int(ds.train.x.shape[1]),
            "hidden": list(p.hidden),
            "n_outputs": n_out,
            "parameterization": p.parameterization,
        },
        lambda a: build_mlp(int(a["input_dim"]), list(a["hidden"]), int(a["n_outputs"]), str(a["parameterization"])),
    ),
    "cnn": ModelEntry(
        "cnn",
        CNNParams,
        lambda ds, p, n_out: {
            "image_shape": channels_first(ds, "cnn"),
            "n_outputs": n_out,
            "channels": list(p.channels),
            "hidden": list(p.hidden),
            "batch_norm": p.batch_norm,
        },
        lambda a: build_cnn(
            tuple(a["image_shape"]),
            int(a["n_outputs"]),
            tuple(a["channels"]),
            tuple(a["hidden"]),
            bool(a.get("batch_norm", True)),
        ),
    ),
    "resnet": ModelEntry(
        "resnet",
        ResNetParams,
        lambda ds, p, n_out: {
            "image_shape": channels_first(ds, "resnet"),
            "n_outputs": n_out,
            "widths": list(p.widths),
            "blocks": p.blocks,
        },
        lambda a: build_resnet(tuple(a["image_shape"]), int(a["n_outputs"]), tuple(a["widths"]), int(a["blocks"])),
    ),
}
MULTITASK_ARCHS = (
    "modular_mlp",
    "modular_transformer",
)  # the multitask models (kernelscope.core.provenance.multitask_spec)


def model_entry(name: str, field: str = "train.arch") -> ModelEntry:
    """The registry entry of an architecture name chosen in params ``field``."""
    if name not in MODELS:
        raise ParamsError(
            f"params: field {field!r} is {name!r}, which is not an architecture of the registry "
            f"({', '.join(MODELS)}); pick one of them."
        )
    return MODELS[name]


def entry_for_section(params: Any) -> tuple[str, ModelEntry]:
    """(name, entry) of the architecture whose settings section ``params`` is (a TrainParams: the mlp)."""
    for name, entry in MODELS.items():
        if isinstance(params, entry.params):
            return name, entry
    raise TypeError(
        f"{type(params).__name__} is the params section of no registry architecture; expected one of "
        f"{', '.join(entry.params.__name__ for entry in MODELS.values())}."
    )


def architecture(dataset: Dataset, params: Any) -> dict[str, Any]:
    """The architecture record (stored in the checkpoint sidecar) of the section ``params`` trained on this data."""
    name, entry = entry_for_section(params)
    return {"name": name, **entry.record(dataset, params, n_outputs_for(dataset.n_classes))}


# Constructing a model draws its initial weights from torch's global RNG, shared by every thread of the process.
_CONSTRUCTION_LOCK = threading.Lock()


@contextmanager
def model_construction(seed: int | None = None) -> Iterator[None]:
    """Construct models inside this: one thread at a time, on a forked global RNG (seeded when ``seed`` is
    given), so a seeded initialization never interleaves with another thread's construction (a checkpoint
    being loaded, another seed) and no construction moves the RNG state others see."""
    with _CONSTRUCTION_LOCK, torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        yield


def build_model(arch: dict[str, Any]) -> nn.Module:
    """An untrained model from an architecture record: a registry model's (``architecture``) or a multitask one's."""
    name = arch.get("name")
    if isinstance(name, str) and name in MODELS:
        return MODELS[name].build(arch)
    if name in MULTITASK_ARCHS:
        from kernelscope.loss_kernel.multitask import build_multitask_model

        return build_multitask_model(
            "transformer" if name == "modular_transformer" else "mlp",
            int(arch["p"]),
            int(arch["embed"]),
            int(arch["hidden"]),
            int(arch.get("heads", 4)),
        )
    # A user's factory is never reached from a record: kernelscope.core.provenance.model_spec builds it from params.
    raise CheckpointError(
        f"architecture name {name!r} is unknown; expected one of "
        f"{', '.join(repr(n) for n in (*MODELS, *MULTITASK_ARCHS))}."
    )


def pick_device(device: str) -> torch.device:
    """The torch device of params.device: 'auto' is CUDA when present, else the CPU; 'cuda' must be present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params: field 'device' is 'cuda', but torch sees no CUDA device on this machine; "
            "set device: auto or device: cpu."
        )
    return torch.device(device)
