"""fixed_threads: the calling thread's torch thread count inside the block, restored after, others untouched."""

import threading

import torch

from kernelscope.core.threads import fixed_threads


def test_fixed_threads_sets_restores_and_leaves_other_threads_alone():
    before = torch.get_num_threads()
    other: dict[str, int] = {}
    ready, checked = threading.Event(), threading.Event()

    def worker() -> None:
        torch.get_num_threads()  # a thread takes the process-wide count at its first torch call, then keeps its own
        torch.set_num_threads(1)
        ready.set()
        checked.wait(10)
        other["during"] = torch.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(10)
    with fixed_threads(3):
        assert torch.get_num_threads() == 3
        checked.set()
        thread.join(10)
    assert other["during"] == 1  # the worker kept its own count while this thread ran with 3
    assert torch.get_num_threads() == before


def test_fixed_threads_restores_after_an_error():
    before = torch.get_num_threads()
    try:
        with fixed_threads(before + 1):
            raise ValueError("boom")
    except ValueError:
        pass
    assert torch.get_num_threads() == before
