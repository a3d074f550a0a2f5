"""DVC remotes: push, then pull in a fresh clone (the project's default remote and KERNELSCOPE_DVC_REMOTE),
going back to an older commit's kernels, and an S3 API on loopback (moto's server, started and stopped here).
HOME is a temporary folder, so the default remote (~/.cache/kernelscope/dvc-remote) is the test's own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.dvc_repo import DVC, dvc_env, dvc_status, output_bytes, pipeline_repo, run, write_params
from tests.support.runs import TINY_PARAMS

pytestmark = pytest.mark.integration

STAGE = "kernel@digits2-trntk"  # data -> train -> kernel: three outputs, no MLflow stage (kglm adds ~15 s a repro)
KERNEL = "digits2/kernels/trntk/train.parquet"
CHAIN = [STAGE, "--with-deps"]  # only this chain ran: a plain push or pull names every stage's outputs


def tiny_params(**train: object) -> dict:
    params = {**TINY_PARAMS, "kernel": {**TINY_PARAMS.get("kernel", {}), "kinds": ["trntk"]}}
    params["train"] = {**TINY_PARAMS["train"], **train}
    return params


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A repository with the project's .dvc/config whose kernel chain ran, was committed and pushed to the default
    remote (under a temporary HOME)."""
    tmp = tmp_path_factory.mktemp("dvc-remote")
    (tmp / "home").mkdir()
    env = {**dvc_env(tmp), "HOME": str(tmp / "home")}
    work = pipeline_repo(tmp / "origin", tiny_params(), env, project_dvc_config=True)
    run(DVC + ["repro", STAGE], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "first kernels"], work, env)
    run([sys.executable, "infra/dvc_remote.py", "push", *CHAIN], work, env)
    return work, env


def test_default_remote_then_a_fresh_clone_pulls_the_same_bytes(pushed, tmp_path):
    origin, env = pushed
    remote = Path(env["HOME"]) / ".cache" / "kernelscope" / "dvc-remote"
    assert any((remote / "files" / "md5").rglob("*")), "nothing was pushed to the default remote"
    assert run(["git", "status", "--porcelain"], origin, env) == ""  # the remote is outside the working tree

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "outputs").exists() and not (clone / ".dvc" / "cache").exists()
    run([sys.executable, "infra/dvc_remote.py", "pull", *CHAIN], clone, env)
    assert output_bytes(clone) == output_bytes(origin) and {KERNEL, "digits2/model/model.safetensors"} <= set(
        output_bytes(clone)
    )
    assert dvc_status(clone, env, *CHAIN) == {}
    assert dvc_status(clone, env, "--cloud", *CHAIN) == {}  # every output is on the remote

    shutil.rmtree(clone / "outputs")
    shutil.rmtree(clone / ".dvc" / "cache")
    run([sys.executable, "infra/dvc_remote.py", "pull", *CHAIN], clone, env)
    assert output_bytes(clone) == output_bytes(origin) and dvc_status(clone, env, *CHAIN) == {}
    assert run(["git", "status", "--porcelain"], clone, env) == ""


def test_checkout_of_an_older_commit_restores_its_kernels(pushed, tmp_path):
    origin, env = pushed
    team = {**env, "KERNELSCOPE_DVC_REMOTE": str(tmp_path / "team-remote")}  # another folder, for one call each
    run([sys.executable, "infra/dvc_remote.py", "push", *CHAIN], origin, team)
    work = tmp_path / "work"
    run(["git", "clone", "-q", str(origin), str(work)], tmp_path, env)
    run([sys.executable, "infra/dvc_remote.py", "pull", *CHAIN], work, team)
    first = output_bytes(work)
    assert first == output_bytes(origin) and dvc_status(work, team, "--cloud", "--remote", "env", *CHAIN) == {}

    write_params(work / "params.yaml", tiny_params(epochs=TINY_PARAMS["train"]["epochs"] + 1))
    run(DVC + ["repro", STAGE], work, env)
    run(["git", "commit", "-qam", "one more epoch"], work, env)
    second = output_bytes(work)
    assert (
        second[KERNEL] != first[KERNEL] and second["digits2/data/train.parquet"] == first["digits2/data/train.parquet"]
    )

    run(["git", "checkout", "-q", "HEAD~1"], work, env)
    run(DVC + ["checkout", *CHAIN], work, env)
    assert output_bytes(work) == first and dvc_status(work, env, *CHAIN) == {}
    run(["git", "checkout", "-q", "-"], work, env)
    run(DVC + ["checkout", *CHAIN], work, env)
    assert output_bytes(work) == second


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(tmp_path):
    """moto's S3 API on 127.0.0.1 (a subprocess, stopped by its PID), with a bucket 'kernels'."""
    port = _free_port()
    log = (tmp_path / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: {(tmp_path / 'moto.log').read_text()}") from None
                time.sleep(0.2)
        request = urllib.request.Request(f"{url}/kernels", method="PUT")  # create the bucket
        urllib.request.urlopen(request, timeout=10).close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_s3_remote_round_trip_on_loopback(pushed, s3_endpoint, tmp_path):
    origin, env = pushed
    s3_env = {
        **env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }

    def point_at_s3(repo: Path) -> None:  # what a team does once per clone (docs/platform.md, "Share and go back")
        run(DVC + ["remote", "add", "--local", "team", "s3://kernels/store"], repo, s3_env)
        run(DVC + ["remote", "modify", "--local", "team", "endpointurl", s3_endpoint], repo, s3_env)

    point_at_s3(origin)
    run(DVC + ["push", "--remote", "team", *CHAIN], origin, s3_env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, s3_env)
    point_at_s3(clone)
    run(DVC + ["pull", "--remote", "team", *CHAIN], clone, s3_env)
    assert output_bytes(clone) == output_bytes(origin) and KERNEL in output_bytes(clone)
    assert dvc_status(clone, s3_env, *CHAIN) == {}
