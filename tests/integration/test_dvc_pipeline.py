"""`dvc repro` in a temporary git repository holding the project's pipeline files."""

import copy
import csv
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kernelscope.core.params import params_from_dict
from tests.support.dvc_repo import DVC, dvc_env, pipeline_repo, write_params
from tests.support.dvc_repo import dvc_status as _status
from tests.support.dvc_repo import run as _run
from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_tau
from tests.support.runs import TINY_PARAMS

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
TINY_LOSS_KERNEL = {"chains": 2, "draws": 10, "burn_in": 5, "steps_between": 2, "batch_size": 64, "umap": False}
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


def _tiny_pipeline_params() -> dict:
    params = copy.deepcopy(TINY_PARAMS)
    params["kernel"]["kinds"] = ["trntk", "ck"]
    params["poison"] = {"kinds": ["trntk"]}
    params["loss_kernel"] = TINY_LOSS_KERNEL
    params["multitask"] = TINY_MULTITASK
    params["structure"] = TINY_STRUCTURE
    params["counterfactual"] = TINY_COUNTERFACTUAL
    return params


@dataclass
class Reproduced:
    work: Path
    env: dict[str, str]
    first: str  # what the first `dvc repro` printed


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Reproduced:
    """The project's pipeline on tiny params in a fresh git + DVC repository, every stage reproduced once; shared by
    this module's tests, which run in file order (the experiments start from what the first test left)."""
    tmp = tmp_path_factory.mktemp("dvc-pipeline")
    env = dvc_env(tmp)
    work = pipeline_repo(tmp / "project", _tiny_pipeline_params(), env)
    return Reproduced(work, env, _run(DVC + ["repro"], work, env))


def test_repro_skips_when_unchanged_and_reruns_only_kglm(reproduced):
    work, env, first = reproduced.work, reproduced.env, reproduced.first
    tiny_params_dict = _tiny_pipeline_params()
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

    second = _run(DVC + ["repro"], work, env)
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
    third = _run(DVC + ["repro"], work, env)
    assert _stages_run(third) == {"kglm@digits2", "counterfactual@digits2"}  # it reads the refitted kGLMs
    assert (work / "outputs/dvc/digits2/comparison/comparison.md").read_text().count("| ck |") == 1

    shown = json.loads(_run(DVC + ["metrics", "show", "--json"], work, env))
    assert "tau_k" in json.dumps(shown)
    lds = json.loads((work / "outputs/dvc/digits2/counterfactual_metrics.json").read_text())
    assert 0 <= lds["grad_dot"]["mislabel_auc"] <= 1  # mislabel detection's metrics beside the LDS
    assert set(lds) == {*TINY_COUNTERFACTUAL["attributors"], "random"} and "counterfactual_metrics.json" in json.dumps(
        shown
    )
    with open(work / "outputs/dvc/digits2/counterfactual/lds.csv") as handle:
        table = {row["attributor"]: float(row["lds"]) for row in csv.DictReader(handle)}
    assert table == pytest.approx({name: row["lds"] for name, row in lds.items() if "lds" in row}, abs=1e-4)


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """{experiment name: its data} from `dvc exp show --json` (the workspace and the baseline commit left out)."""
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                if revision.get("name"):
                    found[revision["name"]] = revision["data"]
    return found


def _stdout(cmd: list[str], work, env) -> str:
    """A command's standard output alone (DVC writes its warnings to stderr)."""
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _value(data: dict, kind: str, file: str, *path: str):
    value = data[kind][file]["data"]
    for key in path:
        value = value[key]
    return value


def test_experiments_run_queue_show_and_diff_plots(reproduced):
    """`dvc exp`: a named variant, a queued one run by DVC's queue workers, their params and metrics side by side, the
    changed columns alone, and one plot drawn for both."""
    work, env = reproduced.work, reproduced.env
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "reproduced"], work, env)  # the baseline the experiments start from
    target = ["kglm@digits2"]  # the stage and everything it needs (data, train, kernels: cached, so not rerun)

    _run(DVC + ["exp", "run", "-n", "strong", "-S", "kglm.alpha=1e-1", *target], work, env)
    # A queued variant, run by DVC's own queue workers.
    _run(DVC + ["exp", "run", "--queue", "-n", "weak", "-S", "kglm.alpha=1e-5", *target], work, env)
    _run(DVC + ["exp", "run", "--run-all"], work, env)

    shown = _experiments(json.loads(_stdout(DVC + ["exp", "show", "--json"], work, env)))
    assert {"strong", "weak"} <= set(shown), shown.keys()
    alphas = {name: _value(shown[name], "params", "params.yaml", "kglm", "alpha") for name in ("strong", "weak")}
    assert alphas == {"strong": 0.1, "weak": 1e-5}
    taus = {
        name: _value(shown[name], "metrics", "outputs/dvc/digits2/metrics.json", "trntk", "tau_k") for name in alphas
    }
    assert all(-1 <= tau <= 1 for tau in taus.values()) and taus["strong"] != taus["weak"]  # the fit followed alpha

    table = _stdout(DVC + ["exp", "show", "--only-changed", "--csv"], work, env)
    header = table.splitlines()[0]
    assert "kglm.alpha" in header and "trntk.tau_k" in header  # what changed, and the metric it moved

    diffed = json.loads(_stdout(DVC + ["plots", "diff", "strong", "weak", "--json"], work, env))["data"]
    (scatter,) = diffed["kGLM vs NN correct-class logit (digits2, trNTK)"]  # the plot dvc.yaml declares
    assert scatter["type"] == "vega" and set(scatter["revisions"]) == {"strong", "weak"}
