"""Synthetic CIFAR-shaped images (kernelscope.data.synthetic), generated from the run's seed: data at any scale
without a download, e.g. 50,000 images for the kernels-at-scale runs."""

from __future__ import annotations

from pathlib import Path

from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, register_reader
from kernelscope.data.synthetic import synthetic_images

DEFAULT_SHAPE, DEFAULT_CLASSES = (3, 32, 32), 10


def _shape(spec: DataSourceParams) -> tuple[int, int, int]:
    return tuple(spec.image_shape) if spec.image_shape is not None else DEFAULT_SHAPE  # type: ignore[return-value]


def _source(spec: DataSourceParams, seed: int) -> str:
    classes = spec.n_classes or DEFAULT_CLASSES
    return f"synthetic_images(samples={spec.synthetic_samples}, classes={classes}, shape={_shape(spec)}, seed={seed})"


@register_reader("synthetic_images", path=None, source=_source)
def read_synthetic_images(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    shape = _shape(spec)
    x, y = synthetic_images(int(spec.synthetic_samples), int(spec.n_classes or DEFAULT_CLASSES), shape, seed)
    names = tuple(str(c) for c in range(int(spec.n_classes or DEFAULT_CLASSES)))
    return RawArrays(x, y, "the generated images", "the generated labels", shape, "the generator", names, None)
