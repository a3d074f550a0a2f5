"""Tampered and mismatched artifacts: no file on disk runs code, and none is read without its content
hash and full provenance being checked.

One healthy run folder (data, model, trntk and proj_trntk kernels, kGLMs of digits2 on tiny params)
is built once; each case tampers with a private copy the way an attacker or a careless user would
(values replaced, metadata edited with the old hash kept, files of other params swapped in) and
checks that the next stage refuses it with one sentence, exit code 2, and writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from kernelscope.cli import main
from kernelscope.core.fileio import sha256_tree
from kernelscope.core.json_artifacts import read_json_artifact, write_json_artifact
from tests.support.cli import cli_args, edit_params, refused
from tests.support.faults import footer, rewrite_parquet
from tests.support.runs import REPO

# data, model, trntk and proj_trntk kernels (K 64), their kGLMs: `kernelscope data|train|kernel|kglm --no-track`
STAGES = ("data", "train", "kernel", "kglm")
KERNEL = {"kinds": ["trntk", "proj_trntk"], "projection_dim": 64}


@pytest.fixture
def run(tiny_run, capsys) -> Path:
    made = tiny_run(STAGES, kernel=KERNEL).root
    capsys.readouterr()
    return made


def _dir(run: Path) -> Path:
    return run / "out" / "digits2"


def _refused_untouched(run: Path, command: list[str], capsys, *fragments: str) -> str:
    before = sha256_tree(run / "out")
    err = refused(cli_args(run, command), capsys, *fragments)
    assert sha256_tree(run / "out") == before, "a refused stage changed the run folder"
    return err


def _rehash_json(path: Path, artifact: str, edit: Callable[[dict], None]) -> None:
    """Edit a JSON artifact and recompute its content hash, as an attacker who read the code would."""
    payload = json.loads(path.read_text())
    payload.pop("kernelscope", None)
    edit(payload)
    write_json_artifact(path, payload, artifact)


# ----------------------------------------------------------------------------------- the sidecar attack


@pytest.mark.parametrize("rehash", [False, True], ids=["sidecar-edited", "sidecar-edited-and-rehashed"])
def test_sidecar_cannot_run_code(run, capsys, rehash):
    """The reproduction of the integrity issue: model.json naming os:system as a factory. No stage imports it."""
    marker = run / "PWNED"
    sidecar = _dir(run) / "model" / "model.json"
    attack = {"name": "factory", "factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    if rehash:
        _rehash_json(sidecar, "checkpoint-sidecar", lambda m: m.update(architecture=attack))
    else:
        meta = json.loads(sidecar.read_text())
        meta["architecture"] = attack
        sidecar.write_text(json.dumps(meta))
    for command in (
        ["kernel", "--kind", "trntk"],
        ["kglm", "--no-track"],
        ["explain", "--index", "0", "--no-track"],
        ["loss-kernel", "--no-track"],
    ):
        _refused_untouched(run, command, capsys, "model.json")
        assert not marker.exists()
    code = main(
        [
            "structure",
            "--subject",
            "digits2",
            "--params",
            str(run / "params.yaml"),
            "--out",
            str(run / "out"),
            "--no-track",
        ]
    )
    assert code == 2 and not marker.exists()


def test_sidecar_attack_as_a_subprocess(run):
    """End to end as a user types it: exit 2, one line, no traceback, no marker."""
    marker = run / "PWNED"
    sidecar = _dir(run) / "model" / "model.json"
    _rehash_json(
        sidecar,
        "checkpoint-sidecar",
        lambda m: m.update(
            architecture={"name": "factory", "factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kernelscope.cli", *cli_args(run, ["kernel", "--kind", "trntk"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (
        proc.stderr
    )
    assert "field 'architecture'" in proc.stderr and not marker.exists()


# ----------------------------------------------------------------------------------- values and metadata edited


def _kernel(run: Path, kind: str = "trntk", split: str = "train") -> Path:
    return _dir(run) / "kernels" / kind / f"{split}.parquet"


def _replace_values(make: Callable[[np.ndarray], np.ndarray]) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        column = table.column("values").combine_chunks()
        values = make(column.flatten().to_numpy().astype(np.float32))
        new = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), column.type.list_size)
        return table.set_column(table.schema.get_field_index("values"), "values", new)

    return edit


TAMPERS = {
    "kernel-random-values": (
        lambda run: rewrite_parquet(_kernel(run), _replace_values(lambda v: np.random.default_rng(0).random(v.shape))),
        ["kglm", "--no-track"],
        ["train.parquet", "content hash"],
    ),
    "kernel-values-times-minus-1e30": (
        lambda run: rewrite_parquet(_kernel(run), _replace_values(lambda v: v * -1e30)),
        ["kglm", "--no-track"],
        ["train.parquet", "content hash"],
    ),
    "kernel-train-ids-reversed": (
        lambda run: rewrite_parquet(_kernel(run), edit_meta=lambda m: m.update(train_ids=m["train_ids"][::-1])),
        ["kglm", "--no-track"],
        ["train.parquet", "content hash"],
    ),
    "kernel-n-train-wrong": (
        lambda run: rewrite_parquet(_kernel(run, split="test"), edit_meta=lambda m: m.update(n_train=m["n_train"] + 1)),
        ["kglm", "--no-track"],
        ["test.parquet", "content hash"],
    ),
    "kernel-kind-relabelled": (
        lambda run: rewrite_parquet(_kernel(run, "proj_trntk"), edit_meta=lambda m: m.update(projection_dim=32)),
        ["kglm", "--no-track"],
        ["proj_trntk", "content hash"],
    ),
    "data-n-classes-edited": (
        lambda run: rewrite_parquet(_dir(run) / "data" / "train.parquet", edit_meta=lambda m: m.update(n_classes=3)),
        ["train"],
        ["train.parquet", "content hash"],
    ),
    "data-labels-edited": (
        lambda run: rewrite_parquet(
            _dir(run) / "data" / "train.parquet",
            lambda t: t.set_column(1, "label", pa.array(np.zeros(t.num_rows, np.int64))),
        ),
        ["train"],
        ["train.parquet", "content hash"],
    ),
    "kglm-byte-flipped": (
        lambda run: _flip_byte(_dir(run) / "kglm" / "trntk" / "kglm.safetensors"),
        ["explain", "--index", "0", "--no-track"],
        ["kglm.safetensors"],
    ),
    "sidecar-metrics-edited": (
        lambda run: _edit_json(_dir(run) / "model" / "model.json", lambda m: m["metrics"].update(train_accuracy=0.123)),
        ["kernel", "--kind", "trntk"],
        ["model.json", "content hash"],
    ),
    "kernel-not-parquet": (
        lambda run: _kernel(run).write_bytes(b"PAR1 not really"),
        ["kglm", "--no-track"],
        ["train.parquet", "not a readable"],
    ),
    "kernel-foreign-parquet": (
        lambda run: _foreign_parquet(_kernel(run)),
        ["kglm", "--no-track"],
        ["train.parquet", "no kernelscope provenance"],
    ),
    "kernel-is-a-dataset": (
        lambda run: shutil.copy(_dir(run) / "data" / "train.parquet", _kernel(run)),
        ["kglm", "--no-track"],
        ["train.parquet", "'dataset-split' artifact where a 'kernel' was expected"],
    ),
}


def _flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x01
    path.write_bytes(bytes(blob))


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))


def _foreign_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path), path)  # same values, but written by another tool: no footer hash


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_artifacts_are_refused(run, capsys, case):
    tamper, command, fragments = TAMPERS[case]
    tamper(run)
    _refused_untouched(run, command, capsys, *fragments)


# ----------------------------------------------------------------------------------- files of other params


def test_kernel_of_another_projection_is_refused_by_the_kglm(run, capsys):
    """proj_trntk computed at K 64 kron_hadamard; a kGLM asked for K 32 gaussian refuses it."""
    edit_params(run, lambda raw: raw["kernel"].update(projection_dim=32, projection="gaussian"))
    _refused_untouched(run, ["kglm", "--no-track"], capsys, "proj_trntk", "provenance field 'projection'")


def test_train_and_test_kernels_of_different_projections_are_refused(run, capsys, tmp_path):
    """The train kernel recomputed at K 32 beside the test kernel of K 64: the kGLM fit on one is never evaluated
    on the other."""
    other = tmp_path / "other"
    shutil.copytree(run, other)
    edit_params(other, lambda raw: raw["kernel"].update(projection_dim=32))
    assert main(cli_args(other, ["kernel", "--kind", "proj_trntk"])) == 0
    assert main(cli_args(other, ["kglm", "--no-track"])) == 0
    shutil.copy(_kernel(other, "proj_trntk", "train"), _kernel(run, "proj_trntk", "train"))
    shutil.copy(
        _dir(other) / "kglm" / "proj_trntk" / "kglm.safetensors", _dir(run) / "kglm" / "proj_trntk" / "kglm.safetensors"
    )
    capsys.readouterr()
    _refused_untouched(run, ["kglm", "--no-track"], capsys, "proj_trntk", "projection_dim")
    _refused_untouched(
        run, ["explain", "--index", "1", "--kinds", "proj_trntk", "--no-track"], capsys, "projection_dim"
    )


def test_kglm_of_other_settings_is_refused(run, capsys):
    """explain reads the kGLM of these params only: one fit with another alpha is refused."""
    edit_params(run, lambda raw: raw["kglm"].update(alpha=0.5))
    _refused_untouched(run, ["explain", "--index", "0", "--no-track"], capsys, "kglm.safetensors", "'kglm'")


def test_checkpoint_of_other_training_params_is_refused(run, capsys):
    """Changing train.lr without retraining: the kernel stage names the field instead of using a model of other
    params."""
    edit_params(run, lambda raw: raw["train"].update(lr=0.2))
    _refused_untouched(
        run, ["kernel", "--kind", "trntk"], capsys, "model.json", "field 'hyperparameters'", "kernelscope train"
    )


def test_data_of_another_seed_is_refused_by_training(run, capsys, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    edit_params(other, lambda raw: raw.update(seed=7))
    assert main(cli_args(other, ["data"])) == 0
    shutil.copy(_dir(other) / "data" / "test.parquet", _dir(run) / "data" / "test.parquet")
    capsys.readouterr()
    _refused_untouched(run, ["train"], capsys, "different data stage runs")
    shutil.copy(_dir(other) / "data" / "train.parquet", _dir(run) / "data" / "train.parquet")
    _refused_untouched(run, ["train"], capsys, "provenance field 'seed' is 7 but this run expects 3")


def test_loss_kernel_summary_is_verified_before_structure_reads_it(run, capsys):
    edit_params(
        run,
        lambda raw: raw.update(
            loss_kernel={"chains": 2, "draws": 10, "burn_in": 2, "steps_between": 1, "batch_size": 64, "umap": False}
        ),
    )
    assert main(cli_args(run, ["loss-kernel", "--no-track"])) == 0
    summary = _dir(run) / "loss_kernel" / "summary.json"
    assert read_json_artifact(summary, "loss-kernel-summary")["llc"] == pytest.approx(
        json.loads(summary.read_text())["llc"]
    )
    _edit_json(summary, lambda s: s.update(llc=1e9))
    capsys.readouterr()
    code = main(
        [
            "structure",
            "--subject",
            "digits2",
            "--params",
            str(run / "params.yaml"),
            "--out",
            str(run / "out"),
            "--no-track",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "summary.json" in err and "content hash" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------- the format itself


def test_every_artifact_carries_a_hash_and_follows_the_umask(run, tmp_path):
    """Every Parquet and safetensors file of a run has a content hash; files get the umask's mode,
    not mkstemp's 0600."""
    from safetensors import safe_open

    for path in (run / "out").rglob("*.parquet"):
        meta, stored = footer(path)
        assert meta["format"] == "kernelscope-artifact/1" and len(stored) == 64, path
    for path in (run / "out").rglob("*.safetensors"):
        with safe_open(str(path), framework="numpy") as handle:
            stamp = json.loads(handle.metadata()["kernelscope"])
            assert stamp["provenance"]["format"] == "kernelscope-artifact/1" and len(stamp["sha256"]) == 64, path
    from kernelscope.core.fileio import write_text_atomic

    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
    modes = {p.stat().st_mode & 0o777 for p in (run / "out").rglob("*") if p.is_file()}
    assert modes == {0o666 & ~previous}, modes


def test_the_hash_does_not_depend_on_row_groups(tmp_path):
    """Same values and provenance, cut into different row groups: the same content hash."""
    from kernelscope.kernels.store import write_kernel

    k = np.random.default_rng(1).random((9, 4))
    a = write_kernel(tmp_path / "a.parquet", k, np.arange(9), np.arange(4), {"kind": "trntk"}, rows_per_group=2)
    b = write_kernel(tmp_path / "b.parquet", k, np.arange(9), np.arange(4), {"kind": "trntk"}, rows_per_group=5)
    assert a["content_sha256"] == b["content_sha256"] == footer(tmp_path / "b.parquet")[1]
    c = write_kernel(tmp_path / "c.parquet", k, np.arange(9), np.arange(4), {"kind": "pntk"}, rows_per_group=5)
    assert c["content_sha256"] != a["content_sha256"]  # the provenance is hashed too


LIBRARY = REPO / "src" / "kernelscope"
# The only places the library may import by a name or unpickle: a user's factory named in params.yaml
# (user_models) and the CIFAR reader's restricted unpickler, which admits numpy's array globals only.
ALLOWED = {"models/user_models.py", "data/readers/restricted_pickle.py"}
DYNAMIC_CALLS = {"import_module", "__import__", "eval", "exec", "compile", "Unpickler"}
DYNAMIC_ATTRIBUTES = {("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("np", "load"), ("numpy", "load")}


def _dynamic_calls(path: Path) -> list[str]:
    """Calls that run code named by data: import by name, eval/exec, unpickling
    (found in the syntax tree, not in strings)."""
    import ast

    def unpickler(node: ast.expr) -> bool:  # pickle's Unpickler or a subclass named like it (_RestrictedUnpickler)
        return (node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")).endswith("Unpickler")

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and any(unpickler(base) for base in node.bases):
            found.append(f"{path.relative_to(LIBRARY)}:{node.lineno} class {node.name}")  # its load() unpickles
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if unpickler(func):
            found.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {ast.unparse(func)}")
        elif isinstance(func, ast.Name) and func.id in DYNAMIC_CALLS:
            found.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {func.id}")
        elif isinstance(func, ast.Attribute) and (
            func.attr in DYNAMIC_CALLS - {"eval", "compile"}
            or (isinstance(func.value, ast.Name) and (func.value.id, func.attr) in DYNAMIC_ATTRIBUTES)
        ):
            no_pickle = any(
                k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in node.keywords
            )
            if not (func.attr == "load" and getattr(func.value, "id", "") in ("np", "numpy") and no_pickle):
                found.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {func.attr}")
    return found


def test_no_artifact_read_path_can_import_or_call_a_name_from_a_file():
    offenders = [
        call
        for p in sorted(LIBRARY.rglob("*.py"))
        if p.relative_to(LIBRARY).as_posix() not in ALLOWED
        for call in _dynamic_calls(p)
    ]
    assert offenders == []
    assert all((LIBRARY / allowed).is_file() for allowed in ALLOWED)  # no exemption outlives its module
    assert _dynamic_calls(LIBRARY / "models/user_models.py")  # the detector does see calls (the params-named factory)
    unpickling = _dynamic_calls(LIBRARY / "data/readers/restricted_pickle.py")  # and the pickle.Unpickler subclass
    assert any(found.endswith("class _RestrictedUnpickler") for found in unpickling)
    assert any(found.endswith(" _RestrictedUnpickler") for found in unpickling)
    # and the one factory path takes its name from params, never from a checkpoint record
    from kernelscope.core.errors import CheckpointError
    from kernelscope.models.zoo import build_model

    with pytest.raises(CheckpointError, match="unknown"):
        build_model({"name": "factory", "factory": "os:system", "kwargs": {"command": "true"}})
    assert "build_from_factory" not in (LIBRARY / "models/checkpoint.py").read_text()


def test_comparison_reads_kernels_with_the_expected_provenance(run):
    """compare_stage's residual plots read the projected and exact kernels against params too
    (it read them unchecked before)."""
    from kernelscope.core.errors import ArtifactError
    from kernelscope.core.layout import RunLayout
    from kernelscope.core.params import load_params
    from kernelscope.surrogate.stages import compare_stage

    layout = RunLayout(_dir(run))
    summaries = [
        read_json_artifact(layout.kglm_dir(kind) / "metrics.json", "metrics") for kind in ("trntk", "proj_trntk")
    ]
    summaries = [{k: (float("nan") if v is None else v) for k, v in s.items()} for s in summaries]
    params = load_params(run / "params.yaml")
    # healthy: the residual plot of proj_trntk against trntk
    assert compare_stage(params, layout, summaries).summary["artifacts"]
    edit_params(run, lambda raw: raw["kernel"].update(projection_dim=32))
    with pytest.raises(
        ArtifactError, match="proj_trntk/train.parquet: provenance field 'projection_dim' is 64 but this run expects 32"
    ):
        compare_stage(load_params(run / "params.yaml"), layout, summaries)
