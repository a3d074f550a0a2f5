"""make setup's pip check: kronfluence's unused torchvision is the one gap allowed; any other problem fails."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
import pip_check  # noqa: E402


def _pip_says(monkeypatch, stdout: str, returncode: int) -> None:
    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, returncode, stdout=stdout, stderr="")

    monkeypatch.setattr(pip_check.subprocess, "run", fake_run)


def test_only_the_documented_gap_is_allowed(monkeypatch, capsys):
    _pip_says(monkeypatch, "kronfluence 1.0.1 requires torchvision, which is not installed.\n", 1)
    assert pip_check.main() == 0
    _pip_says(monkeypatch, "No broken requirements found.\n", 0)
    assert pip_check.main() == 0
    _pip_says(
        monkeypatch,
        "kronfluence 1.0.1 requires torchvision, which is not installed.\n"
        "mlflow 3.17.2 has requirement pyarrow<24, but you have pyarrow 25.0.1.\n",
        1,
    )
    assert pip_check.main() == 1
    assert "mlflow 3.17.2 has requirement pyarrow" in capsys.readouterr().err
