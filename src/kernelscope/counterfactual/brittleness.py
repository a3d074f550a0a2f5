"""Brittleness (Ilyas et al. 2022): remove the k training points an attributor says support a prediction most,
retrain, and count how often the prediction flips, against removing k random points.

For each query x (a seeded sample of correctly classified test points) and each k, the kept rows are every
training point but the k with the largest τ(x, ·) (or k drawn at random). All models of one k train on
N − k points, so they are trained together in stacks (kernelscope.models.stacked_training), one task each in the
counterfactual flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelscope.core.fileio import sha256_bytes
from kernelscope.data.datasets import Dataset
from kernelscope.models.heads import predictions
from kernelscope.models.stacked_training import train_on_subsets

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


@dataclass(frozen=True)
class RemovalJobs:
    """The distinct (kept rows, seed) retrainings of one k over every attributor's orders, cut into stacks.

    A (kept rows, seed) pair two attributors agree on trains once. The stacks are equal, of at most ``stack``
    models (100 models at 32: four of 25, not 32 + 32 + 32 + 4): a stack of 8 takes about half the time of a
    stack of 32 (benchmarks/retrain_bench.py), so a small last stack is wasteful.
    """

    k: int
    rows: list[np.ndarray]  # job -> (N − k,) kept training rows, sorted
    seeds: list[int]  # job -> retraining seed
    index: dict[tuple[bytes, int], int]  # (kept rows bytes, seed) -> job
    size: int  # models per stack

    @property
    def stacks(self) -> int:
        return -(-len(self.rows) // self.size)

    def stack(self, b: int) -> range:
        return range(b * self.size, min((b + 1) * self.size, len(self.rows)))

    def digest(self, b: int) -> str:
        """sha256 of stack b's (kept rows, seed) jobs: what its retrained models depend on beside the recipe."""
        return sha256_bytes(*(self.rows[j].tobytes() + str(self.seeds[j]).encode() for j in self.stack(b)))


def removal_jobs(orders: dict[str, np.ndarray], k: int, seeds: np.ndarray, stack: int) -> RemovalJobs:
    """Every attributor's (q, N) orders -> the distinct retrainings without each query's first k."""
    rows: list[np.ndarray] = []
    job_seeds: list[int] = []
    index: dict[tuple[bytes, int], int] = {}
    for per_query in orders.values():
        for order in per_query:
            kept = kept_rows(order, k)
            for seed in seeds:
                key = (kept.tobytes(), int(seed))
                if key not in index:
                    index[key] = len(rows)
                    rows.append(kept)
                    job_seeds.append(int(seed))
    size = -(-len(rows) // -(-len(rows) // stack)) if rows else 1
    return RemovalJobs(k, rows, job_seeds, index, size)


def stack_wrong(ds: Dataset, section: Any, jobs: RemovalJobs, b: int, queries: np.ndarray) -> np.ndarray:
    """(models of stack b, q) bool: each query's prediction is wrong after that model's retraining."""
    picked = jobs.stack(b)
    models = train_on_subsets(
        ds, section, np.stack([jobs.rows[j] for j in picked]), np.array([jobs.seeds[j] for j in picked])
    )
    logits = models.logits(ds.test.x[queries])  # (models, q, C_out)
    return np.stack([predictions(z) != ds.test.y[queries] for z in logits])


def flips_from(
    jobs: RemovalJobs, stacks: list[np.ndarray], orders: dict[str, np.ndarray], seeds: np.ndarray, queries: int
) -> dict[str, np.ndarray]:
    """Every attributor's (q, s) flips from each stack's (models, q) wrong predictions, stacks in order."""
    wrong = np.concatenate(stacks) if stacks else np.zeros((0, queries), dtype=bool)  # (jobs, q)
    out = {}
    for name, per_query in orders.items():
        table = [
            [wrong[jobs.index[(kept_rows(order, jobs.k).tobytes(), int(seed))], i] for seed in seeds]
            for i, order in enumerate(per_query)
        ]
        out[name] = np.array(table, dtype=bool).reshape(len(per_query), len(seeds))
    return out


def flipped_by_attributor(
    ds: Dataset,
    section: Any,
    queries: np.ndarray,
    orders: dict[str, np.ndarray],
    k: int,
    seeds: np.ndarray,
    stack: int,
) -> dict[str, np.ndarray]:
    """``flipped`` for every attributor's (q, N) orders at once, the models of all attributors in shared stacks
    (they all train on N − k rows); the counterfactual stage trains the same stacks one task each."""
    jobs = removal_jobs(orders, k, seeds, stack)
    stacks = [stack_wrong(ds, section, jobs, b, queries) for b in range(jobs.stacks)]
    return flips_from(jobs, stacks, orders, seeds, len(queries))
