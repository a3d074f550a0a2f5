import subprocess
import sys

import pytest
import yaml

from kernelscope.cli import build_parser, main
from kernelscope.core.errors import ParamsError
from kernelscope.core.params import load_params

SUBCOMMANDS = ["data", "train", "kernel", "kglm"]


def test_repo_params_file_is_valid():
    from tests.support.runs import REPO

    params = load_params(REPO / "params.yaml")
    assert params.train.hidden == (100, 100, 100)
    assert set(params.datasets) == {"digits2", "digits10"}


def test_bad_field_names_file_and_field(tmp_path, tiny_params_dict):
    tiny_params_dict["kglm"]["alpha"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict))
    with pytest.raises(ParamsError, match=r"params\.yaml: field 'kglm\.alpha'"):
        load_params(path)
    tiny_params_dict["kglm"] = {"alpah": 1e-4}
    path.write_text(yaml.safe_dump(tiny_params_dict))
    with pytest.raises(ParamsError, match=r"kglm\.alpah"):
        load_params(path)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_cli_reports_missing_inputs_without_traceback(tmp_path, tiny_params_dict, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params_dict))
    code = main(["train", "--params", str(path), "--dataset", "digits2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.parquet: dataset-split file not found" in err and "Traceback" not in err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "kernelscope.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert all(name in out.stdout for name in SUBCOMMANDS)
