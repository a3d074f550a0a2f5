"""Running `kernelscope` in process on a run folder (``ROOT/params.yaml``, ``ROOT/out``) and checking its refusals."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from kernelscope.cli import main


def cli_args(run: Path, command: list[str], dataset: str = "digits2") -> list[str]:
    """``command`` with the run folder's --params, --dataset, --out and --quiet."""
    return [*command, "--params", str(run / "params.yaml"), "--dataset", dataset, "--out", str(run / "out"), "--quiet"]


def refused(argv: list[str], capsys, *fragments: str) -> str:
    """``main(argv)`` exits 2 with one line `kernelscope <cmd>: error: ...` holding every fragment, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"kernelscope {argv[0]}: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def edit_params(run: Path, edit: Callable[[dict], None]) -> Path:
    """Edit the run folder's params.yaml in place; returns its path."""
    raw = yaml.safe_load((run / "params.yaml").read_text())
    edit(raw)
    path = run / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def factory_source(run: Path, weights: Path, **model) -> None:
    """Point params.yaml at a user's data (the byo blobs) and factory model with these weights; run the data stage."""
    from kernelscope.examples.byo import write_data

    write_data(run / "blobs.npz")
    spec = {
        "data": {"format": "npz", "path": str(run / "blobs.npz")},
        "model": {
            "factory": "kernelscope.examples.byo:make_net",
            "kwargs": {"in_features": 16, "hidden": 32, "n_classes": 4},
            "weights": str(weights),
            **model,
        },
    }
    edit_params(run, lambda raw: raw.update(sources={"blobs": spec}, datasets=["blobs"]))
    assert main(cli_args(run, ["data"], "blobs")) == 0


def healthy_weights(path: Path, hidden: int = 32) -> Path:
    """Safetensors weights of the byo factory model (seeded)."""
    from safetensors.torch import save_file

    from kernelscope.examples.byo import make_net

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in make_net(16, hidden, 4).state_dict().items()}, str(path))
    return path


class Payload:
    """Unpickling this runs os.system: the crafted pickle a weights loader must never execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
