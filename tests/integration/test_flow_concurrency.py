"""Two runs of the same flow at once, with the same params, the same outputs folder, the same Prefect
cache (PREFECT_HOME) and the same MLflow store, as when two users click Run on one deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.results import ResultRecord

from kernelscope.core.fileio import sha256_tree
from kernelscope.core.results import StageResult
from tasks.caching import stale_outputs
from tasks.results import check_record
from tests.support.runs import REPO, TINY_PARAMS

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
from kernelscope.core.params import load_params
from flows.surrogate import attribution
result = attribution(params=load_params(sys.argv[1]), dataset="digits2", outputs=sys.argv[2])
summary = {"tasks": result["tasks"], "hits": result["cache_hits"], "tau_k": result["summaries"][0]["tau_k"]}
print("RESULT " + json.dumps(summary))
"""


def _launch(tmp_path: Path, home: Path, outputs: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "params.yaml"), str(outputs)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=420)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])


def _within_run(value: Any) -> Any:
    """A summary with every path cut to its part within the dataset's folder (the runs live in different places)."""
    if isinstance(value, dict):
        return {key: _within_run(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_within_run(v) for v in value]
    if isinstance(value, str) and "/digits2/" in value:
        return value.split("/digits2/", 1)[1]
    return value


def test_two_attribution_runs_at_once_agree_with_a_lone_run(tmp_path, tiny_run):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    together = [_launch(tmp_path, tmp_path / "shared-home", tmp_path / "shared") for _ in range(2)]
    # The reference: the same stages run alone, in this process, without Prefect (its own folder, no cache).
    alone = tiny_run(stages=("data", "train", "kernel", "kglm"))
    first, second = (_result(p) for p in together)
    alone_dir = alone.layout.root
    alone_tau = json.loads((alone_dir / "kglm" / "trntk" / "metrics.json").read_text())["tau_k"]
    assert first["tau_k"] == second["tau_k"] == alone_tau
    shared = tmp_path / "shared" / "digits2"
    for part in ("data", "model", "kernels"):  # byte-identical artifacts, nothing torn or mixed
        assert sha256_tree(shared / part) == sha256_tree(alone_dir / part), part
    files = sorted(p.relative_to(shared) for p in (shared / "kglm").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(alone_dir) for p in (alone_dir / "kglm").rglob("*") if p.is_file())
    for name in files:  # summaries name their own folder; everything else is the same bytes
        a, b = (shared / name).read_bytes(), (alone_dir / name).read_bytes()
        if name.suffix == ".json":  # its content hash covers the paths too, so compare the payloads
            a, b = (_within_run(json.loads(x)) for x in (a, b))
            a.pop("kernelscope"), b.pop("kernelscope")
        assert a == b, name
    assert not list((tmp_path / "shared").rglob("*.tmp"))
    # The shared cache is intact: one record per task, each a kernelscope record that Prefect can read back, whose
    # result names the shared files with their hashes as they are now (what a third run would take as hits).
    records = sorted((tmp_path / "shared-home" / "kernelscope-results").iterdir())
    # Every cached task of the flow, once: all it runs but the kernel-rows tasks (train, test: held in memory, not
    # kept), which a run skips when it finds the kernel cached; the run that computed the kernel ran them.
    assert len(records) == max(first["tasks"], second["tasks"]) - 2
    for path in records:
        record = ResultRecord.deserialize(check_record(path, path.read_bytes()))
        assert isinstance(record.result, StageResult) and not stale_outputs(record.result), path.name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("attribution").experiment_id])
    per_kernel = [r for r in runs if r.data.tags.get("kernel") == "trntk"]
    assert len(per_kernel) == 2  # both runs logged, none lost to a locked or half-made store
    assert len({r.data.tags["params_hash"] for r in runs}) == 1
