"""Temporary git + DVC repositories holding the project's pipeline files, for the DVC tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from kernelscope.core.params import params_from_dict
from tests.support.runs import REPO

DVC = [sys.executable, "-m", "dvc"]


def write_params(path: Path, raw: dict) -> None:
    """Every field written out, defaults included, as a user's params.yaml would have them."""
    path.write_text(yaml.safe_dump(params_from_dict(raw).model_dump(mode="json"), sort_keys=False))


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc_env(tmp: Path) -> dict[str, str]:
    """The environment of a DVC subprocess: this interpreter's tools first, MLflow under ``tmp``, a git identity."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }


def pipeline_repo(work: Path, params: dict, env: dict[str, str], *, project_dvc_config: bool = False) -> Path:
    """A git repository at ``work`` with the project's dvc.yaml, src/, infra/dvc_remote.py and .gitignore, ``params``
    as params.yaml and ``dvc init`` done (``project_dvc_config``: the project's .dvc/config, its default remote),
    committed."""
    work.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", work / ".gitignore")
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (work / "infra").mkdir()
    shutil.copy(REPO / "infra" / "dvc_remote.py", work / "infra" / "dvc_remote.py")
    write_params(work / "params.yaml", params)
    run(["git", "init", "-q"], work, env)
    run(DVC + ["init", "-q"], work, env)
    if project_dvc_config:
        shutil.copy(REPO / ".dvc" / "config", work / ".dvc" / "config")
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "pipeline"], work, env)
    return work


def output_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root``/outputs/dvc by its relative path."""
    base = root / "outputs" / "dvc"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def dvc_status(work: Path, env: dict[str, str], *args: str) -> dict:
    """`dvc status --json [args]`: what changed since the last repro or checkout (stdout only: no warnings)."""
    proc = subprocess.run(
        [*DVC, "status", "--json", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"dvc status failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)
