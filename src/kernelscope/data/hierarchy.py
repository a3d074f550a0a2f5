"""Class hierarchies (superclasses) for the loss kernel's taxonomic lift: a small YAML file.

    name: digit-shapes
    superclasses:
      round: [0, 6, 8, 9]
      straight: [1, 4, 7]
      curvy: [2, 3, 5]

Every class must belong to exactly one superclass. Loaded with yaml.safe_load (no objects).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from kernelscope.core.errors import KernelscopeError


def load_hierarchy(path: str | Path, n_classes: int) -> tuple[str, np.ndarray, list[str]]:
    """(name, superclass index of every class (n_classes,), superclass names) from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise KernelscopeError(
            f"{path}: hierarchy file not found; set loss_kernel.hierarchy to an existing YAML file or null."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise KernelscopeError(f"{path}: not valid YAML ({error.__class__.__name__}); fix the syntax.") from None
    groups = raw.get("superclasses") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise KernelscopeError(f"{path}: field 'superclasses' must map superclass names to lists of classes.")
    index = np.full(n_classes, -1)
    names = list(groups)
    for g, (name, members) in enumerate(groups.items()):
        if not isinstance(members, list) or not all(isinstance(c, int) and 0 <= c < n_classes for c in members):
            raise KernelscopeError(f"{path}: field 'superclasses.{name}' must list classes in 0..{n_classes - 1}.")
        for c in members:
            if index[c] != -1:
                raise KernelscopeError(
                    f"{path}: class {c} is in both '{names[index[c]]}' and '{name}'; "
                    "each class belongs to one superclass."
                )
            index[c] = g
    missing = np.flatnonzero(index == -1)
    if len(missing):
        raise KernelscopeError(
            f"{path}: classes {missing.tolist()} belong to no superclass; add them to field 'superclasses'."
        )
    return str(raw.get("name", path.stem)), index, names


def taxonomic_lift(r: np.ndarray, labels: np.ndarray, superclass_of: np.ndarray, k: int) -> dict[str, float]:
    """Among a point's k nearest neighbours under R that have a *different* label, how often they share its
    superclass, against the rate expected from the class frequencies (the loss-kernel paper's taxonomic lift)."""
    r = np.array(r, dtype=np.float64)
    np.fill_diagonal(r, -np.inf)
    other = labels[None, :] != labels[:, None]
    r = np.where(other, r, -np.inf)  # only neighbours of another class
    neighbours = np.argsort(-r, axis=1, kind="stable")[:, :k]
    sup = superclass_of[labels]
    same = (sup[neighbours] == sup[:, None]).mean()
    # Expected rate for a neighbour drawn at random among the other-class points.
    expected = np.mean([(sup[other[i]] == sup[i]).mean() for i in range(len(labels))])
    return {
        "superclass_agreement": float(same),
        "superclass_base_rate": float(expected),
        "taxonomic_lift": float(same / expected) if expected > 0 else float("nan"),
    }
