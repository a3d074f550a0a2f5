"""`dvc repro` in a temporary git repository holding the project's pipeline files."""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from kernelscope.core.params import params_from_dict
from tests.support.dvc_repo import dvc_env, write_params
from tests.support.dvc_repo import dvc_status as _status
from tests.support.dvc_repo import run as _run
from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_tau
from tests.support.runs import REPO

pytestmark = pytest.mark.integration


TINY_MULTITASK = {
    "p": 11,
    "steps": 30,
    "nbeta": None,
    "gamma": 1000.0,
    "batch_size": 64,
    "embed": 8,
    "hidden": 32,
    "probes_per_task": 10,
    "chains": 2,
    "draws": 6,
    "burn_in": 3,
    "steps_between": 2,
    "sgld_batch_size": 32,
    "umap": False,  # umap-learn's first call compiles for seconds; tests/loss_kernel/test_multitask.py draws it
}
TINY_COUNTERFACTUAL = {
    "attributors": ["grad_dot", "kglm:trntk", "kernel:ck"],
    "m": 4,
    "models_per_stack": 4,
    "projection_dim": 32,
    "bootstrap": 20,
    "brittleness_queries": 2,
    "brittleness_k": [5],
}
TINY_STRUCTURE = {"points": 40, "chunk_size": 16, "ablation_steps": 5, "check_points": 16}


def _precision_of_written_kernels(root: Path, kind: str, k: int, m: int) -> float:
    """The k-of-m rule's precision recomputed from a forensic run's files: a test point (clean, then stamped) is flagged
    when at least m of its k most similar training points are poisoned; precision: the share of stamped ones flagged."""
    import pyarrow.parquet as pq

    from kernelscope.kernels.store import read_kernel

    poisoned = pq.read_table(root / "data" / "train.parquet").column("is_poisoned").to_numpy().astype(bool)
    clean, _ = read_kernel(root / "kernels" / kind / "test.parquet")  # (n_test, n_train)
    stamped, _ = read_kernel(root / "kernels" / kind / "test_poisoned.parquet")  # (n_test, n_train)
    nearest = np.argsort(-np.concatenate([clean, stamped]), axis=1, kind="stable")[:, :k]
    flagged = poisoned[nearest].sum(axis=1) >= m
    is_stamped = np.arange(len(clean) + len(stamped)) >= len(clean)
    return float(is_stamped[flagged].mean())


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_skips_when_unchanged_and_reruns_only_kglm(tmp_path, tiny_params_dict):
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    tiny_params_dict["kernel"]["kinds"] = ["trntk", "ck"]
    tiny_params_dict["poison"] = {"kinds": ["trntk"]}
    tiny_params_dict["loss_kernel"] = {
        "chains": 2,
        "draws": 10,
        "burn_in": 5,
        "steps_between": 2,
        "batch_size": 64,
        "umap": False,
    }
    tiny_params_dict["multitask"] = TINY_MULTITASK
    tiny_params_dict["structure"] = TINY_STRUCTURE
    tiny_params_dict["counterfactual"] = TINY_COUNTERFACTUAL
    write_params(work / "params.yaml", tiny_params_dict)
    env = dvc_env(tmp_path)
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], work, env)
    _run(dvc + ["init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "pipeline"], work, env)

    first = _run(dvc + ["repro"], work, env)
    assert _stages_run(first) == {
        "data@digits2",
        "train@digits2",
        "kernel@digits2-trntk",
        "kernel@digits2-ck",
        "kglm@digits2",
        "counterfactual@digits2",
        "poison",
        "poison_train",
        "poison_kernel@trntk",
        "poison_detect",
        "loss_kernel@digits2",
        "multitask_train",
        "multitask_loss_kernel",
        "structure@digits2",
        "structure_multitask",
    }
    structure = json.loads((work / "outputs/dvc/digits2/structure_metrics.json").read_text())
    assert structure["coordinate_free_kept"] == 1.0
    llc = json.loads((work / "outputs/dvc/digits2/loss_kernel_metrics.json").read_text())["llc"]
    assert structure["effective_parameters"] == pytest.approx(2 * llc, rel=1e-3, abs=4e-6)
    assert "llc" in json.loads((work / "outputs/dvc/multitask/structure_metrics.json").read_text())
    assert json.loads((work / "outputs/dvc/digits2/loss_kernel_metrics.json").read_text())["llc"] == pytest.approx(
        json.loads((work / "outputs/dvc/digits2/loss_kernel/summary.json").read_text())["llc"], abs=5e-7
    )  # the metrics file rounds to 6 decimals (core.fileio.dvc_metrics)
    forensics = json.loads((work / "outputs/dvc/forensics/digits10/metrics.json").read_text())
    poison = params_from_dict(tiny_params_dict).poison
    assert forensics["trntk"]["precision"] == pytest.approx(
        _precision_of_written_kernels(work / "outputs/dvc/forensics/digits10", "trntk", poison.k, poison.m), abs=1e-6
    )
    metrics = json.loads((work / "outputs/dvc/digits2/metrics.json").read_text())
    assert metrics["trntk"]["tau_k"] == pytest.approx(
        written_tau(work / "outputs/dvc/digits2/kglm/trntk"), abs=WRITTEN_TAU_TOLERANCE
    )

    second = _run(dvc + ["repro"], work, env)
    assert _stages_run(second) == set()

    # Another multitask architecture: dvc status (no repro) names the modular model's training, not the NTK kernels.
    arch = params_from_dict(tiny_params_dict).multitask.arch
    tiny_params_dict["multitask"] = {**TINY_MULTITASK, "arch": "mlp" if arch == "transformer" else "transformer"}
    write_params(work / "params.yaml", tiny_params_dict)
    status = _status(work, env)
    assert "multitask_train" in status and not [name for name in status if name.startswith("kernel@")], status
    tiny_params_dict["multitask"] = TINY_MULTITASK
    write_params(work / "params.yaml", tiny_params_dict)
    assert _status(work, env) == {}

    tiny_params_dict["kglm"]["alpha"] = 1e-2
    write_params(work / "params.yaml", tiny_params_dict)
    third = _run(dvc + ["repro"], work, env)
    assert _stages_run(third) == {"kglm@digits2", "counterfactual@digits2"}  # it reads the refitted kGLMs
    assert (work / "outputs/dvc/digits2/comparison/comparison.md").read_text().count("| ck |") == 1

    shown = json.loads(_run(dvc + ["metrics", "show", "--json"], work, env))
    assert "tau_k" in json.dumps(shown)
    lds = json.loads((work / "outputs/dvc/digits2/counterfactual_metrics.json").read_text())
    assert 0 <= lds["grad_dot"]["mislabel_auc"] <= 1  # mislabel detection's metrics beside the LDS
    assert set(lds) == {*TINY_COUNTERFACTUAL["attributors"], "random"} and "counterfactual_metrics.json" in json.dumps(
        shown
    )
    with open(work / "outputs/dvc/digits2/counterfactual/lds.csv") as handle:
        table = {row["attributor"]: float(row["lds"]) for row in csv.DictReader(handle)}
    assert table == pytest.approx({name: row["lds"] for name, row in lds.items() if "lds" in row}, abs=1e-4)
