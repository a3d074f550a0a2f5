"""Image folders: one subfolder of images per class (sorted names are the classes), read with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, register_reader


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


@register_reader("image_folder", path="folder", image_shape_from_data=True)
def read_image_folder(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    from PIL import Image

    if not path.is_dir():
        raise ArtifactError(
            f"{source}: is not a folder; point data.path at a folder with one subfolder of images per class."
        )
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and _visible(p))
    if len(classes) < 2:
        raise ArtifactError(
            f"{source}: has {len(classes)} class subfolders ({', '.join(classes) or 'none'}); "
            "put the images in one subfolder per class, at least two."
        )
    mode = "L" if spec.grayscale else "RGB"
    size_hw = tuple(spec.image_size) if spec.image_size is not None else None
    first: tuple[str, tuple[int, int]] | None = None
    pixels, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (path / name).iterdir() if p.is_file() and _visible(p))
        if not files:
            raise ArtifactError(f"{source}/{name}: class folder holds no image files; add images or remove the folder.")
        for file in files:
            shown = f"{source}/{name}/{file.name}"
            try:
                with Image.open(file) as image:
                    image.load()
                    image = image.convert(mode)
            except Exception as error:  # noqa: BLE001 - Pillow raises many kinds
                raise ArtifactError(
                    f"{shown}: Pillow cannot read this file as an image ({error.__class__.__name__}: "
                    f"{error}); remove it or replace it with a valid image."
                ) from None
            if size_hw is not None:
                if (image.height, image.width) != size_hw:
                    image = image.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
            elif first is None:
                first = (shown, (image.height, image.width))
            elif (image.height, image.width) != first[1]:
                (h0, w0), (h1, w1) = first[1], (image.height, image.width)
                raise ArtifactError(
                    f"{source}: images differ in size ({first[0]} is {h0}x{w0} but {shown} is "
                    f"{h1}x{w1} (height x width)); set data.image_size to resize them all."
                )
            arr = np.asarray(image, dtype=np.uint8)
            pixels.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    stacked = np.stack(pixels)
    x = stacked.astype(np.float32) / np.float32(255.0)
    image_shape = tuple(int(v) for v in stacked.shape[1:])
    return RawArrays(
        x,
        np.asarray(labels, dtype=np.int64),
        "the images",
        "the class subfolders",
        image_shape,
        "the images",
        tuple(classes),
        None,
    )
