"""Torch's intra-op thread count, fixed for a block of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fixed_threads(n: int | None) -> Iterator[None]:
    """Torch threads of the calling thread set to ``n``, then restored (None: left as they are). With OpenMP the
    count is per thread once a thread has made its first torch call (which takes the process-wide count): the
    runner's busy threads keep theirs.

    Results that must not depend on the machine or on the flow's runner (the threads runner gives each task one
    thread, a Dask worker its share) fix the count: float sums in another order give another training run and
    other SGLD draws.
    """
    if n is None:
        yield
        return
    import torch  # here, not at import: the task modules that import this stay light

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
