"""Wall-clock time and peak memory of a piece of work (each attributor records both beside its scores)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil


@dataclass
class Cost:
    seconds: float = 0.0
    peak_mb: float = 0.0  # resident memory above the level at the start (MiB), sampled every 10 ms


@contextmanager
def measured() -> Iterator[Cost]:
    """``with measured() as cost: ...``; cost is filled in when the block ends (also when it raises)."""
    process = psutil.Process()
    start_rss = process.memory_info().rss
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    cost = Cost()
    start = time.perf_counter()
    sampler.start()
    try:
        yield cost
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        cost.seconds = time.perf_counter() - start
        cost.peak_mb = (peak[0] - start_rss) / 2**20
