"""Progress lines: counts and rates, throttled, with a final line."""

import logging

from kernelscope.core.progress import Progress


def test_progress_logs_counts_rates_and_a_final_line(caplog, monkeypatch):
    clock = iter([0.0, 1.0, 5.0, 11.0, 12.0, 30.0])  # start, four updates, close
    monkeypatch.setattr("kernelscope.core.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="kernelscope.core.progress"):
        with Progress(4, "trntk kernel rows", "block", every=10.0) as bar:
            for _ in range(4):
                bar.update()
    lines = [r.getMessage() for r in caplog.records]
    # t=1, 5: under 10 s since the start, no line; t=11: a line (3 blocks in 11 s); t=12: throttled; t=30: the end.
    assert lines[0] == "trntk kernel rows: 3/4 blocks (0.273 block/s, 11 s elapsed, ETA 4 s)"
    assert lines[-1].startswith("trntk kernel rows: 4/4 blocks (0.133 block/s, 30 s elapsed")
    assert len(lines) == 2


def test_progress_says_nothing_final_after_an_error(caplog):
    with caplog.at_level(logging.INFO, logger="kernelscope.core.progress"):
        try:
            with Progress(3, "SGLD", "step") as bar:
                bar.update()
                raise RuntimeError("diverged")
        except RuntimeError:
            pass
    assert not caplog.records


def test_listeners_hear_the_first_step_and_the_end(monkeypatch):
    from kernelscope.core import progress

    heard: list[tuple[int, int, bool]] = []
    monkeypatch.setattr(progress, "LISTENERS", [lambda bar, finished: heard.append((bar.done, bar.total, finished))])
    with progress.Progress(10, "steps", every=3600) as bar:
        for _ in range(4):
            bar.update()
        bar.shorten(4)  # the loop ends early: the bar and the last notice say 4 of 4
    assert heard == [(1, 10, False), (4, 4, True)]


def test_a_failed_loop_still_tells_its_listeners_it_ended(monkeypatch):
    import pytest

    from kernelscope.core import progress

    heard: list[tuple[int, bool]] = []
    monkeypatch.setattr(progress, "LISTENERS", [lambda bar, ended: heard.append((bar.done, ended))])
    with pytest.raises(RuntimeError), progress.Progress(10, "steps", every=3600) as bar:
        bar.update()
        raise RuntimeError("the loop failed")
    assert heard == [(1, False), (1, True)]
