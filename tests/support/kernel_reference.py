"""Slow, obviously-correct references: every per-sample, per-class gradient materialized by autograd."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def per_class_gradients(model: nn.Module, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """g[i][c] = dF_c(x_i)/dθ as one flat vector, one sample and one class at a time."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(len(x)):
        logits = model(x[i : i + 1])[0]
        per_class = []
        for c in range(logits.shape[0]):
            g = torch.autograd.grad(logits[c], params, retain_graph=True)
            per_class.append(torch.cat([t.reshape(-1) for t in g]).detach())
        out.append(per_class)
    return out


def trntk0(model, xq, xt) -> np.ndarray:
    gq, gt = per_class_gradients(model, xq), per_class_gradients(model, xt)
    return np.array([[sum(float(a @ b) for a, b in zip(gi, gj)) for gj in gt] for gi in gq])


def pntk(model, xq, xt) -> np.ndarray:
    gq, gt = per_class_gradients(model, xq), per_class_gradients(model, xt)
    n_classes = len(gq[0])
    return np.array([[float(sum(gi) @ sum(gj)) / n_classes for gj in gt] for gi in gq])


def cosine(k0_fn, model, xq, xt) -> np.ndarray:
    k0 = k0_fn(model, xq, xt)
    dq = np.array([k0_fn(model, xq[i : i + 1], xq[i : i + 1])[0, 0] for i in range(len(xq))])
    dt = np.array([k0_fn(model, xt[j : j + 1], xt[j : j + 1])[0, 0] for j in range(len(xt))])
    return k0 / np.sqrt(np.outer(dq, dt))


def cosine_of_features(fq: torch.Tensor, ft: torch.Tensor) -> np.ndarray:
    fq, ft = fq.detach().double(), ft.detach().double()
    return ((fq @ ft.T) / torch.outer(fq.norm(dim=1), ft.norm(dim=1))).numpy()
