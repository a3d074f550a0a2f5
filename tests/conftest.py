"""Shared fixtures: small random models and a tiny params set for fast pipeline runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tool homes for the whole test session live in a temporary folder, never in the repo.
_SESSION_HOME = Path(os.environ.setdefault("KERNELSCOPE_TEST_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"kernelscope-tests-{os.getpid()}")))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_HOME / 'mlflow.db'}")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
_SESSION_HOME.mkdir(parents=True, exist_ok=True)

torch.set_num_threads(min(2, os.cpu_count() or 1))


TINY_PARAMS = {
    "seed": 3,
    "device": "cpu",
    "datasets": ["digits2"],
    "data": {"test_fraction": 0.3},
    "train": {"arch": "mlp", "hidden": [16, 16], "parameterization": "ntk", "optimizer": "sgd", "lr": 0.1,
              "momentum": 0.0, "batch_size": 16, "epochs": 15},
    "kernel": {"kinds": ["trntk"], "chunk_size": 64, "memory_budget_mb": 64, "projection_dim": 256,
               "projection": "kron_hadamard", "em_layers": None},
    "kglm": {"alpha": 1e-3, "max_iter": 200, "tol": 1e-3},
    "scale": {"runner": "sequential"},  # params.yaml's threads would spread the tests' tasks over threads
}


@pytest.fixture
def tiny_params_dict() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)
