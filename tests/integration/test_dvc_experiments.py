"""`dvc exp` on the project's pipeline: parameter variants as experiments, a queued grid, their metrics and plots."""

import json
import subprocess

import pytest

from tests.support.dvc_repo import DVC, dvc_env, pipeline_repo
from tests.support.dvc_repo import run as _run

pytestmark = pytest.mark.integration


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


def test_experiments_run_queue_show_and_diff_plots(tmp_path, tiny_params_dict):
    tiny_params_dict["datasets"] = ["digits2"]
    tiny_params_dict["kernel"]["kinds"] = ["trntk"]
    env = dvc_env(tmp_path)
    work = pipeline_repo(tmp_path / "project", tiny_params_dict, env)
    target = ["kglm@digits2"]  # the stage and everything it needs: data, train, kernel

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
