"""BadNets poisoning (Gu et al.; trigger after Shan et al.): stamp a trigger, relabel to a target.

Shan et al. use an opaque 4×4 square with a 3-pixel margin in the bottom-right corner of 32×32
images; the default here scales both to the image size: side round(4/32 · s) but at least 2,
margin floor(3/32 · s). 8×8 digits get a 2×2 square in the very corner (a 1-pixel margin would
put it on the digits' strokes, which reach the second-to-last row and column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernelscope.core.errors import KernelscopeError
from kernelscope.data.datasets import Dataset, Split


@dataclass(frozen=True)
class Trigger:
    size: int | None = None  # square side in pixels; None: scaled from Shan et al.'s 4 / 32
    margin: int | None = None  # pixels from the bottom and right edges; None: floor(3/32 of the side)
    value: float = 1.0  # pixel intensity in [0, 1] ("opaque": the maximum)
    pattern: str = "solid"  # solid | checker (alternating value and 0)
    position: str = "bottom-right"  # bottom-right | top-left

    def resolved(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(row0, col0, size, margin) of the trigger in an image of this shape."""
        size = self.size if self.size is not None else max(2, round(min(height, width) * 4 / 32))
        margin = self.margin if self.margin is not None else int(min(height, width) * 3 / 32)
        if size + margin > min(height, width):
            raise KernelscopeError(
                f"trigger of size {size} with margin {margin} does not fit a {height}×{width} image; "
                "lower poison.trigger_size."
            )
        if self.position == "bottom-right":
            return height - margin - size, width - margin - size, size, margin
        if self.position == "top-left":
            return margin, margin, size, margin
        raise KernelscopeError(f"trigger position {self.position!r} is unknown; use 'bottom-right' or 'top-left'.")

    def patch(self, size: int) -> np.ndarray:
        if self.pattern == "solid":
            return np.full((size, size), self.value, dtype=np.float32)
        if self.pattern == "checker":
            return (self.value * ((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0)).astype(np.float32)
        raise KernelscopeError(f"trigger pattern {self.pattern!r} is unknown; use 'solid' or 'checker'.")


def stamp(x: np.ndarray, image_shape: tuple[int, int], trigger: Trigger) -> np.ndarray:
    """(n, h·w) flat images -> copies with the trigger pasted in (exact pixels, nothing else changes)."""
    h, w = image_shape
    r0, c0, size, _ = trigger.resolved(h, w)
    images = x.reshape(len(x), h, w).copy()
    images[:, r0 : r0 + size, c0 : c0 + size] = trigger.patch(size)
    return images.reshape(len(x), h * w)


@dataclass(frozen=True)
class PoisonedData:
    """The poisoned training set, the clean test set and the fully stamped test set."""

    dataset: Dataset  # train: poisoned training set; test: clean test set
    is_poisoned: np.ndarray  # (n_train,) bool
    test_poisoned: Split  # every test image stamped; labels are the true labels
    target: int

    @property
    def test_is_target_class(self) -> np.ndarray:
        """Stamped test points whose true label is the target: they cannot show the attack."""
        return self.test_poisoned.y == self.target


def badnets(ds: Dataset, *, fraction: float, target: int, trigger: Trigger, seed: int) -> PoisonedData:
    """Stamp and relabel a seeded `fraction` of the training set, chosen among non-target points."""
    if not 0 <= target < ds.n_classes:
        raise KernelscopeError(
            f"poison.target {target} is not a class of {ds.name} (0..{ds.n_classes - 1}); fix params.yaml."
        )
    if not 0 < fraction < 1:
        raise KernelscopeError(f"poison.fraction {fraction} must be in (0, 1); fix params.yaml.")
    if len(ds.image_shape) != 2:
        raise KernelscopeError(f"{ds.name} is not image data; BadNets needs images.")
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(ds.train.y != target)
    count = int(round(fraction * len(ds.train.y)))
    chosen = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    is_poisoned = np.zeros(len(ds.train.y), dtype=bool)
    is_poisoned[chosen] = True
    x = ds.train.x.copy()
    y = ds.train.y.copy()
    x[chosen] = stamp(ds.train.x[chosen], ds.image_shape, trigger)
    y[chosen] = target
    poisoned = Dataset(f"{ds.name}-badnets", Split(x, y, ds.train.ids), ds.test, ds.n_classes, ds.image_shape)
    stamped = Split(stamp(ds.test.x, ds.image_shape, trigger), ds.test.y.copy(), ds.test.ids)
    return PoisonedData(poisoned, is_poisoned, stamped, target)


def attack_success_rate(pred_on_stamped: np.ndarray, true_labels: np.ndarray, target: int) -> float:
    """Fraction of stamped non-target test points classified as the target."""
    keep = true_labels != target
    return float((pred_on_stamped[keep] == target).mean()) if keep.any() else float("nan")
