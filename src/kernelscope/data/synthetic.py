"""Synthetic class-structured images: CIFAR-shaped data (3 × 32 × 32 by default) for benchmarks and scale runs,
generated from a seed, so a 50,000-image set needs no download."""

from __future__ import annotations

import numpy as np

_SHIFT = 4  # pixels a sample is translated by, at most, in each direction (wrapping around)
_WAVES = 6  # low-frequency plane waves summed into each class's prototype, per channel


def class_prototypes(n_classes: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(n_classes, c, h, w) smooth patterns in [0, 1]: per channel a sum of random low-frequency plane waves."""
    c, h, w = shape
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    freq = rng.integers(1, 4, size=(n_classes, c, _WAVES, 2))  # cycles across the image
    phase = rng.uniform(0, 2 * np.pi, size=(n_classes, c, _WAVES))
    amp = rng.uniform(0.5, 1.0, size=(n_classes, c, _WAVES))
    arg = 2 * np.pi * (freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx) + phase[..., None, None]
    waves = (amp[..., None, None] * np.sin(arg)).sum(2)  # (n_classes, c, h, w)
    low, high = waves.min(axis=(1, 2, 3), keepdims=True), waves.max(axis=(1, 2, 3), keepdims=True)
    return (waves - low) / (high - low)


def synthetic_images(
    n: int, n_classes: int = 10, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0, noise: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, c·h·w) float32 in [0, 1], y (n,) int64): class prototypes, each sample randomly translated,
    rescaled in contrast and overlaid with Gaussian noise; labels balanced, in seeded order."""
    rng = np.random.default_rng(seed)
    protos = class_prototypes(n_classes, shape, rng)
    c, h, w = shape
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    x = np.empty((n, c * h * w), dtype=np.float32)
    rows, cols = np.arange(h), np.arange(w)
    for start in range(0, n, 4096):  # chunks keep the float64 temporaries small
        yb = y[start : start + 4096]
        b = len(yb)
        dy, dx = rng.integers(-_SHIFT, _SHIFT + 1, size=(2, b))
        ih = (rows[None, :] - dy[:, None]) % h  # (b, h)
        iw = (cols[None, :] - dx[:, None]) % w  # (b, w)
        channel = np.arange(c)[None, :, None, None]
        img = protos[yb[:, None, None, None], channel, ih[:, None, :, None], iw[:, None, None, :]]  # (b, c, h, w)
        contrast = rng.uniform(0.6, 1.0, size=(b, 1, 1, 1))
        img = 0.5 + contrast * (img - 0.5) + noise * rng.standard_normal(img.shape)
        x[start : start + b] = np.clip(img, 0.0, 1.0).reshape(b, -1)
    return x, y
