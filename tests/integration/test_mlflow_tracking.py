"""Logging to a temporary SQLite store and reading it back through the MLflow client."""

import math

import pytest
from mlflow.tracking import MlflowClient

from kernelscope.core.params import params_from_dict
from kernelscope.surrogate.stages import track_attribution

pytestmark = pytest.mark.integration


def test_logged_run_reads_back(tmp_path, tiny_params_dict, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    plot, points = tmp_path / "probabilities.png", tmp_path / "probabilities.csv"
    plot.write_bytes(b"\x89PNG fake")
    points.write_text("test_id,label,kglm_logit,nn_logit\n0,1,0.5,0.7\n")
    summary = {
        "dataset": "digits2",
        "kind": "trntk",
        "tau_k": 0.7,
        "tad": -0.5,
        "r_miss": float("nan"),
        "nn_accuracy": 0.99,
        "kglm_accuracy": 0.985,
        "kglm_converged": True,
        "checkpoint_hash": "c" * 64,
        "dataset_hash": "d" * 64,
        "plot": str(plot),
        "points_csv": str(points),
    }
    (run_id,) = track_attribution(
        params_from_dict(tiny_params_dict), [summary], source="test", experiment="attribution-test"
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.metrics["tau_k"] == pytest.approx(0.7)
    assert run.data.metrics["tad"] == pytest.approx(-0.5)
    assert math.isnan(run.data.metrics["r_miss"])
    assert run.data.params["kglm.alpha"] == "0.001"
    assert run.data.tags["checkpoint_hash"] == "c" * 64 and run.data.tags["source"] == "test"
    assert {a.path for a in client.list_artifacts(run_id)} == {"probabilities.png", "probabilities.csv"}
