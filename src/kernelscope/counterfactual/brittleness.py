"""Brittleness (Ilyas et al. 2022): remove the k training points an attributor says support a prediction most,
retrain, and count how often the prediction flips, against removing k random points.

For each query x (a seeded sample of correctly classified test points) and each k, the kept rows are every
training point but the k with the largest τ(x, ·) (or k drawn at random). All models of one k train on
N − k points, so they are trained together as one stack (kernelscope.counterfactual.retrain).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.counterfactual.retrain import train_on_subsets
from kernelscope.data.datasets import Dataset
from kernelscope.models.heads import predictions

RANDOM = "random"


def brittleness_queries(ds: Dataset, test_logits: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(≤ n,) test rows the model classifies correctly, a seeded sample in increasing order."""
    correct = np.flatnonzero(predictions(test_logits) == ds.test.y)
    rng = np.random.default_rng([seed, 0xB417])
    return np.sort(rng.choice(correct, size=min(n, len(correct)), replace=False))


def kept_rows(order: np.ndarray, k: int) -> np.ndarray:
    """The training rows left when the first k of ``order`` are removed, sorted: (N − k,)."""
    return np.sort(order[k:])


def removal_orders(scores: np.ndarray | None, queries: np.ndarray, n_train: int, seed: int) -> np.ndarray:
    """(q, N) training rows, most supportive first (largest τ(x, ·), ties by row), or a seeded random order."""
    if scores is None:
        rng = np.random.default_rng([seed, 0x8A4D])
        return np.stack([rng.permutation(n_train) for _ in queries])
    return np.stack([np.lexsort((np.arange(n_train), -scores[q])) for q in queries])


def flipped(
    ds: Dataset, section: Any, queries: np.ndarray, orders: np.ndarray, k: int, seeds: np.ndarray, stack: int
) -> np.ndarray:
    """(q, s) bool: query i's prediction is wrong after retraining (seed j) without the first k of orders[i]."""
    return flipped_by_attributor(ds, section, queries, {"": orders}, k, seeds, stack)[""]


def flipped_by_attributor(
    ds: Dataset,
    section: Any,
    queries: np.ndarray,
    orders: dict[str, np.ndarray],
    k: int,
    seeds: np.ndarray,
    stack: int,
) -> dict[str, np.ndarray]:
    """``flipped`` for every attributor's (q, N) orders at once: the models of all attributors share stacks of
    ``stack`` (they all train on N − k rows), and a (kept rows, seed) pair two attributors agree on trains once."""
    jobs: dict[tuple[bytes, int], tuple[np.ndarray, int]] = {}  # (rows, seed) -> (kept rows (N − k,), seed)
    for per_query in orders.values():
        for order in per_query:
            rows = kept_rows(order, k)
            for seed in seeds:
                jobs.setdefault((rows.tobytes(), int(seed)), (rows, int(seed)))
    keys = list(jobs)
    wrong: dict[tuple[bytes, int], np.ndarray] = {}  # (rows, seed) -> (q,) bool: every query's prediction wrong
    # Equal stacks of at most ``stack`` models (100 models at 32: four of 25, not 32 + 32 + 32 + 4): a stack of 8
    # takes about half the time of a stack of 32 (benchmarks/retrain_bench.py): a small last stack is wasteful.
    size = -(-len(keys) // -(-len(keys) // stack)) if keys else 1
    for first in range(0, len(keys), size):
        chunk = keys[first : first + size]
        models = train_on_subsets(ds, section, np.stack([jobs[c][0] for c in chunk]), np.array([c[1] for c in chunk]))
        logits = models.logits(ds.test.x[queries])  # (models, q, C_out)
        for model, key in enumerate(chunk):
            wrong[key] = predictions(logits[model]) != ds.test.y[queries]
    return {
        name: np.array(
            [
                [wrong[(kept_rows(order, k).tobytes(), int(seed))][i] for seed in seeds]
                for i, order in enumerate(per_query)
            ],
            dtype=bool,
        ).reshape(len(queries), len(seeds))
        for name, per_query in orders.items()
    }
