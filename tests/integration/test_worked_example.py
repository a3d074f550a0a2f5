"""The worked example of docs/own-model-and-data.md (bringing your own model and data), run exactly as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.expect import WRITTEN_TAU_TOLERANCE, written_tau
from tests.support.runs import REPO

pytestmark = pytest.mark.integration


def worked_example() -> str:
    readme = (REPO / "docs" / "own-model-and-data.md").read_text()
    block = re.search(r"<!-- worked-example:start -->\s*```bash\n(.*?)```\s*<!-- worked-example:end -->", readme, re.S)
    assert block, "docs/own-model-and-data.md lost its worked example markers"
    return block.group(1)


def test_readme_worked_example_runs(tmp_path):
    script = tmp_path / "example.sh"
    script.write_text("set -euo pipefail\n" + worked_example())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "byo" / "run" / "blobs"
    sidecar = json.loads((run / "model" / "model.json").read_text())
    assert sidecar["architecture"] == {
        "name": "factory",
        "factory": "kernelscope.examples.byo:make_net",
        "kwargs": {"in_features": 16, "hidden": 32, "n_classes": 4},
    }
    assert sidecar["metrics"]["test_accuracy"] > 0.8  # the user's trained weights were loaded, not a fresh init
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"trntk", "proj_pntk", "ck"}
    for kind, m in metrics.items():  # the DVC metrics file holds each kGLM's τ_K of the logits it wrote
        assert m["tau_k"] == pytest.approx(written_tau(run / "kglm" / kind), abs=WRITTEN_TAU_TOLERANCE), kind
    assert (run / "loss_kernel" / "probe_losses.parquet").is_file()
    structure = json.loads((run / "structure" / "summary.json").read_text())
    assert structure["layers"] == ["input", "1", "3", "output"] and structure["coordinate_free_kept"]
    assert list((run / "explain").iterdir())
