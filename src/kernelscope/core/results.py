"""What every stage returns: the files it wrote, each with its content hash, and a small JSON-able summary.

The outputs are what a cached result is checked against before it is trusted (tasks.caching): a cache
hit whose files are gone or hold other bytes than the stage wrote is run again. The summary is what
the stage's caller reads (metrics, hashes, the paths of its figures); it holds plain values only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelscope.core.fileio import sha256_tree

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Output:
    """A file (or a folder, by its tree hash) a stage wrote, and the sha256 of its content then."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: PathLike) -> Output:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: named as a stage's output but does not exist (a bug in that stage).")
        return cls(str(path), sha256_tree(path))

    def is_fresh(self) -> bool:
        """Still there with the same bytes (sha256_tree says 'missing' for a path that is gone, never a hash)."""
        return sha256_tree(self.path) == self.sha256


@dataclass(frozen=True)
class StageResult:
    """``outputs``: every file the stage wrote, in the order written; ``summary``: what the stage reports."""

    outputs: tuple[Output, ...]
    summary: dict[str, Any]

    @classmethod
    def of(cls, summary: dict[str, Any], paths: Iterable[PathLike], *parts: StageResult) -> StageResult:
        """A result for ``summary`` whose outputs are ``parts``' outputs, then ``paths`` (hashed now).

        ``parts``: results of the stages this one ran (a seed run's training, kernel, kGLM and evaluation);
        a path named twice is listed once, at its last place.
        """
        outputs = [o for part in parts for o in part.outputs] + [Output.of(p) for p in paths]
        last = {o.path: i for i, o in enumerate(outputs)}
        return cls(tuple(o for i, o in enumerate(outputs) if last[o.path] == i), summary)

    def stale(self) -> list[Output]:
        """The outputs that are missing or changed since the stage wrote them."""
        return [o for o in self.outputs if not o.is_fresh()]
