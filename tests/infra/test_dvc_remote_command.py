"""make push / pull / remote-status: which dvc calls infra/dvc_remote.py makes (the round trips themselves are
tests/integration/test_dvc_remote.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
import dvc_remote  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]


def test_without_the_variable_the_default_remote_is_used():
    assert dvc_remote.dvc_command("push", ["stage", "--with-deps"], {}) == [[*DVC, "push", "stage", "--with-deps"]]
    assert dvc_remote.dvc_command("status", [], {"KERNELSCOPE_DVC_REMOTE": "  "}) == [[*DVC, "status", "--cloud"]]


def test_a_folder_is_made_absolute_and_a_url_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    add, pull = dvc_remote.dvc_command("pull", [], {"KERNELSCOPE_DVC_REMOTE": "shared/remote"})
    assert add == [*DVC, "remote", "add", "--local", "--force", "env", str(tmp_path / "shared" / "remote")]
    assert pull == [*DVC, "pull", "--remote", "env"]
    add, status = dvc_remote.dvc_command("status", ["-v"], {"KERNELSCOPE_DVC_REMOTE": "s3://bucket/kernels"})
    assert add[-1] == "s3://bucket/kernels" and status == [*DVC, "status", "--cloud", "--remote", "env", "-v"]


def test_an_unknown_action_is_refused_with_the_usage(capsys):
    assert dvc_remote.main(["commit"]) == 2
    assert "usage: python infra/dvc_remote.py {push|pull|status}" in capsys.readouterr().err
