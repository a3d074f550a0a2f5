"""Brittleness: which points are removed, which queries are asked, and flips against explicit retrainings."""

import numpy as np

from kernelscope.core.param_sections import TrainParams
from kernelscope.counterfactual.brittleness import (
    brittleness_queries,
    flipped,
    flipped_by_attributor,
    kept_rows,
    removal_orders,
)
from kernelscope.data.datasets import make_digits, restricted
from kernelscope.models.heads import predictions
from kernelscope.models.train import predict_logits, train_classifier


def test_removal_orders_and_kept_rows():
    scores = np.array([[0.1, 0.9, 0.9, -2.0, 0.5]])
    order = removal_orders(scores, np.array([0]), 5, seed=0)[0]
    assert order.tolist() == [1, 2, 4, 0, 3]  # largest support first, ties by row
    assert kept_rows(order, 2).tolist() == [0, 3, 4]
    random = removal_orders(None, np.array([0, 1]), 5, seed=0)
    assert sorted(random[0]) == list(range(5)) and np.array_equal(random, removal_orders(None, np.array([0, 1]), 5, 0))


def test_queries_are_correctly_classified_and_seeded():
    ds = make_digits("digits2", 0.3, 0)
    logits = (
        np.where(np.arange(len(ds.test.y)) % 3 == 0, -1.0, 1.0)[:, None] * np.where(ds.test.y == 1, 1.0, -1.0)[:, None]
    )
    queries = brittleness_queries(ds, logits, 5, seed=1)
    assert len(queries) == 5 and (predictions(logits[queries]) == ds.test.y[queries]).all()
    assert np.array_equal(queries, brittleness_queries(ds, logits, 5, seed=1))


def test_flips_match_explicit_retrainings():
    ds = make_digits("digits2", 0.3, 0)
    section = TrainParams(hidden=(8,), epochs=3, lr=0.5)
    queries = np.array([0, 7])
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(len(ds.train.y)) for _ in queries])
    seeds = np.array([11, 12])
    got = flipped(ds, section, queries, orders, 60, seeds, stack=3)  # stacks cut across queries and seeds
    for i, q in enumerate(queries):
        mask = np.zeros(len(ds.train.y), dtype=bool)
        mask[kept_rows(orders[i], 60)] = True
        for j, seed in enumerate(seeds):
            model = train_classifier(restricted(ds, mask), section, int(seed), progress=False).model
            assert got[i, j] == (predictions(predict_logits(model, ds.test.x[q : q + 1]))[0] != ds.test.y[q])


def test_attributors_share_stacks_and_agree_with_one_at_a_time():
    ds = make_digits("digits2", 0.3, 0)
    section = TrainParams(hidden=(8,), epochs=2, lr=0.5)
    queries = np.array([0, 3, 7])
    rng = np.random.default_rng(1)
    a = np.stack([rng.permutation(len(ds.train.y)) for _ in queries])
    b = a.copy()
    b[1] = rng.permutation(len(ds.train.y))  # b agrees with a on queries 0 and 2: those models train once
    seeds = np.array([5])
    together = flipped_by_attributor(ds, section, queries, {"a": a, "b": b}, 50, seeds, stack=2)
    assert together["a"].shape == (3, 1)
    assert np.array_equal(together["a"], flipped(ds, section, queries, a, 50, seeds, stack=4))
    assert np.array_equal(together["b"], flipped(ds, section, queries, b, 50, seeds, stack=1))
