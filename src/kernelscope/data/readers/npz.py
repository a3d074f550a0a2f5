"""npz archives: arrays x_key and y_key, optional 'image_shape' and 'split'; opened with allow_pickle=False."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernelscope.core.errors import ArtifactError
from kernelscope.core.param_sources import DataSourceParams
from kernelscope.data.readers.base import RawArrays, as_shape, register_reader, split_to_is_test


@register_reader("npz", path="file")
def read_npz(spec: DataSourceParams, source: str, path: Path | None, seed: int) -> RawArrays:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any failure to open is the user's file
        raise ArtifactError(
            f"{source}: not a readable .npz archive ({error.__class__.__name__}: {error}); "
            "save it with numpy.savez or point data.path at one."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ArtifactError(
            f"{source}: holds a single .npy array, not an .npz archive; save x and y together with numpy.savez."
        )
    with archive:
        names = list(archive.files)

        def get(key: str, field: str | None) -> np.ndarray:
            if key not in names:
                fix = f"set {field} to the right array's name" if field else "add it"
                raise ArtifactError(f"{source}: has no array '{key}' (arrays: {', '.join(names) or 'none'}); {fix}.")
            try:
                return archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise ArtifactError(
                        f"{source}: array '{key}' is an object (pickled) array, which is not loaded "
                        "because unpickling can run code; save it as a numeric or string "
                        "array."
                    ) from None
                raise ArtifactError(
                    f"{source}: array '{key}' is unreadable ({error}); save it again with numpy.savez."
                ) from None
            except Exception as error:  # noqa: BLE001
                raise ArtifactError(
                    f"{source}: array '{key}' is unreadable ({error.__class__.__name__}: {error}); "
                    "save it again with numpy.savez."
                ) from None

        x = get(spec.x_key, "data.x_key")
        y = get(spec.y_key, "data.y_key")
        stored_shape = get("image_shape", None) if "image_shape" in names else None
        split = get("split", None) if "split" in names else None
    x_name, y_name = f"array '{spec.x_key}'", f"array '{spec.y_key}'"
    implied: tuple[int, ...] | None = None
    if x.ndim > 2:
        implied = (1, *x.shape[1:]) if x.ndim == 3 else tuple(x.shape[1:])
    image_shape: tuple[int, ...] | None
    if spec.image_shape is not None:
        image_shape = tuple(spec.image_shape)
        if implied is not None and image_shape != implied:
            raise ArtifactError(
                f"{source}: {x_name} has per-point shape {tuple(x.shape[1:])} but data.image_shape is "
                f"{image_shape}; store x as (n, channels, height, width) or remove data.image_shape."
            )
        shape_origin = "data.image_shape"
    elif stored_shape is not None:
        image_shape = as_shape(stored_shape, source=source, name="array 'image_shape'")
        if implied is not None and image_shape != implied:
            raise ArtifactError(
                f"{source}: {x_name} has per-point shape {tuple(x.shape[1:])} but array 'image_shape' "
                f"is {image_shape}; make them agree."
            )
        shape_origin = "array 'image_shape'"
    else:
        image_shape, shape_origin = implied, "x"
    n_rows = x.shape[0] if x.ndim else 0
    is_test = None if split is None else split_to_is_test(split, source=source, name="array 'split'", n=n_rows)
    return RawArrays(x, y, x_name, y_name, image_shape, shape_origin, None, is_test)
