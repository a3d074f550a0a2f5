"""Progress of long loops: a tqdm bar in the terminal, and log lines with counts and rates.

The log lines go to the ``kernelscope.core.progress`` logger at most every ``every`` seconds (and at
the end), so they show in a Prefect flow run's logs in the UI (Prefect forwards the loggers named
in PREFECT_LOGGING_EXTRA_LOGGERS; settings.apply_tool_defaults adds ``kernelscope``) and in any
other logging set-up, while the bar is only drawn when asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType

from tqdm.auto import tqdm

LOGGER = logging.getLogger("kernelscope.core.progress")
if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.INFO)  # progress is information by default, whatever the root logger says


# Called as listener(progress, ended) at the first update, with every logged line, and once with ended=True when
# the loop is over, done or failed. tasks/ adds one that shows each loop as a progress bar on the Prefect UI (the
# library itself never imports Prefect).
LISTENERS: list[Callable[[Progress, bool], None]] = []


class Progress:
    """``with Progress(total, "trntk rows", "block", bar=True) as p: ... p.update()``"""

    def __init__(self, total: int, desc: str, unit: str = "it", *, bar: bool = False, every: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done = 0
        self.start = self.last_log = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not bar, leave=False)

    def update(self, n: int = 1) -> None:
        first = self.done == 0
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last_log >= self.every and self.done < self.total:
            self.last_log = now
            LOGGER.info(self.line(now))
            self._notify(False)
        elif first:
            self._notify(False)

    def _notify(self, ended: bool) -> None:
        for listener in LISTENERS:
            listener(self, ended)

    def shorten(self, total: int) -> None:
        """The work ends early (at ``total``): the count, the bar and the ETA say so from now on."""
        self.total = total
        self.bar.total = total
        self.bar.refresh()

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (
            f"{self.desc}: {self.done}/{self.total} {self.unit}s "
            f"({rate:.3g} {self.unit}/s, {elapsed:.0f} s elapsed, ETA {eta:.0f} s)"
        )

    def close(self, finished: bool = True) -> None:
        self.bar.close()
        if finished:
            LOGGER.info(self.line(time.monotonic()))
        self._notify(True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(finished=kind is None)
