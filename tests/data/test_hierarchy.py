"""data.hierarchy: superclass files and the taxonomic lift of a similarity matrix, by hand."""

import numpy as np
import pytest

from kernelscope.core.errors import KernelscopeError
from kernelscope.data.hierarchy import load_hierarchy, taxonomic_lift
from tests.support.runs import REPO


def test_taxonomic_lift_by_hand_and_hierarchy_refusals(tmp_path):
    # classes 0, 1 form superclass A, class 2 is B; each point's nearest other-class neighbour:
    labels = np.array([0, 1, 2, 0])
    r = np.array([[1.0, 0.9, 0.1, 0.5], [0.9, 1.0, 0.2, 0.1], [0.1, 0.2, 1.0, 0.8], [0.5, 0.1, 0.8, 1.0]])
    superclass_of = np.array([0, 0, 1])
    out = taxonomic_lift(r, labels, superclass_of, k=1)
    # 0 -> 1 (same A), 1 -> 0 (same A), 2 -> 3 (label 0: A, not B), 3 -> 2 (B, not A): 2 of 4
    assert out["superclass_agreement"] == pytest.approx(0.5)
    # expected: point 0: others {1 (A), 2 (B)} -> 1/2; point 1: {0, 2, 3} -> 2/3; point 2: {0, 1, 3} -> 0;
    # point 3: {1, 2} -> 1/2
    assert out["superclass_base_rate"] == pytest.approx((0.5 + 2 / 3 + 0 + 0.5) / 4)
    good = tmp_path / "h.yaml"
    good.write_text("name: toy\nsuperclasses:\n  A: [0, 1]\n  B: [2]\n")
    name, index, names = load_hierarchy(good, 3)
    assert name == "toy" and index.tolist() == [0, 0, 1] and names == ["A", "B"]
    (tmp_path / "dup.yaml").write_text("superclasses:\n  A: [0, 1]\n  B: [1, 2]\n")
    with pytest.raises(KernelscopeError, match="class 1 is in both"):
        load_hierarchy(tmp_path / "dup.yaml", 3)
    (tmp_path / "gap.yaml").write_text("superclasses:\n  A: [0]\n")
    with pytest.raises(KernelscopeError, match=r"classes \[1, 2\] belong to no superclass"):
        load_hierarchy(tmp_path / "gap.yaml", 3)
    assert load_hierarchy(REPO / "src/kernelscope/data/hierarchies/digits-shapes.yaml", 10)[0] == "digit-shapes"
