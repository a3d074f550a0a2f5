"""The README's worked example of bringing your own model and data: this module plays the user's
code. ``make_net`` is the model factory named in params.yaml; running the module writes the data
set (``blobs.npz``) and the trained weights (``net.safetensors``) that the example then analyses.

    python -m kernelscope.examples.byo outputs/byo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def make_net(in_features: int = 16, hidden: int = 32, n_classes: int = 4) -> nn.Sequential:
    """The user's architecture: a two-hidden-layer ReLU MLP on flat inputs."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    )


def write_data(path: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian blobs in 16 dimensions, 600 points: x (600, 16) float32, y (600,) int64."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, n_features=16, centers=4, cluster_std=4.0, random_state=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y.astype(np.int64))
    return x, y.astype(np.int64)


def train_and_save(x: np.ndarray, y: np.ndarray, path: Path, seed: int = 0, epochs: int = 60) -> nn.Module:
    """Train make_net() with Adam and save its state dict as safetensors (what a user brings)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = make_net(x.shape[1], 32, int(y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the worked example's data set and trained weights.")
    parser.add_argument("out", help="folder for blobs.npz and net.safetensors")
    args = parser.parse_args(argv)
    out = Path(args.out)
    x, y = write_data(out / "blobs.npz")
    train_and_save(x, y, out / "net.safetensors")
    print(f"wrote {out / 'blobs.npz'} and {out / 'net.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
