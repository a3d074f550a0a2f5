"""Shared pieces of the fault tests (crash safety, concurrency, tampering): CLI subprocesses, torn-file checks,
Parquet edits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from kernelscope.core.artifacts import HASH_KEY, META_KEY, verify_parquet
from kernelscope.core.fileio import sha256_file
from kernelscope.core.json_artifacts import read_json_artifact
from kernelscope.kernels.store import TEST_BLOCK_DELAY_ENV, read_kernel

DATASET = "digits2"
# The fault tests' run: tiny_run(FAULT_STAGES, **FAULT_OVERRIDES). Many small row groups (16 rows) so a writer
# can be caught mid-file; a short SGLD run for the loss kernel.
FAULT_STAGES = ("data", "train")
FAULT_OVERRIDES = {
    "kernel": {"chunk_size": 16},
    "loss_kernel": {"chains": 2, "draws": 30, "burn_in": 5, "steps_between": 2, "batch_size": 64, "umap": False},
}


def cli(command: list[str], params_file: Path, out: Path, *, delay: float | None = None, **popen) -> subprocess.Popen:
    """Start `kernelscope <command> --dataset digits2 --out OUT --params FILE --quiet` in a subprocess."""
    env = dict(os.environ)
    env.pop(TEST_BLOCK_DELAY_ENV, None)
    env["OMP_NUM_THREADS"] = "1"  # two or three runs share two cores: no oversubscription, and every run alike
    if delay:
        env[TEST_BLOCK_DELAY_ENV] = str(delay)
    cmd = [
        sys.executable,
        "-m",
        "kernelscope.cli",
        *command,
        "--dataset",
        DATASET,
        "--out",
        str(out),
        "--params",
        str(params_file),
        "--quiet",
    ]
    return subprocess.Popen(
        cmd, env=env, cwd=params_file.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_cli(command: list[str], params_file: Path, out: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    done = finish(cli(command, params_file, out), timeout)
    assert done.returncode == 0, f"kernelscope {' '.join(command)} failed:\n{done.stderr[-3000:]}"
    return done


def temp_files(folder: Path, pattern: str = ".*.tmp") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def wait_for_temp(
    proc: subprocess.Popen, folder: Path, pattern: str, timeout: float = 90, min_bytes: int = 5
) -> list[Path]:
    """Poll until a temporary file matching ``pattern`` in ``folder`` holds more than its Parquet magic
    (a row group is in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for path in folder.glob(pattern) if folder.is_dir() else []:
            try:
                if path.stat().st_size >= min_bytes:
                    found.append(path)
            except FileNotFoundError:
                pass
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (rc {proc.returncode}) before a temporary file {pattern} appeared:\n"
                f"{proc.stderr.read()[-3000:]}"
            )
        time.sleep(0.02)
    raise AssertionError(f"no temporary file {folder}/{pattern} within {timeout} s")


def sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL the process we started (by its id) and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def assert_no_torn_files(root: Path) -> list[Path]:
    """Every file under its final name (no leading dot) reads completely: Parquet tables (kernels against their
    metadata's row count), JSON documents. Returns the final files checked."""
    checked = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix == ".parquet":
            table = pq.read_table(path)  # raises on a torn file (no footer, short row group)
            artifact = json.loads(pq.ParquetFile(path).metadata.metadata[META_KEY.encode()])["artifact"]
            meta = verify_parquet(path, artifact)  # and its content hash holds
            if "n_query" in meta:  # a kernel: every row its metadata promises
                values, meta = read_kernel(path)
                assert values.shape == (meta["n_query"], meta["n_train"]) == (table.num_rows, len(meta["train_ids"])), (
                    path
                )
            elif "chains" in meta:  # probe losses: chains × draws per probe
                assert table.column("losses").type.list_size == meta["chains"] * meta["draws"], path
        elif path.suffix == ".json":
            document = json.loads(path.read_text())
            if META_KEY in document:  # a verified artifact (DVC metrics files are plain JSON)
                read_json_artifact(path, document[META_KEY]["artifact"])
        checked.append(path)
    return checked


def digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: sha256_file(path) for name, path in paths.items()}


def footer(path: Path) -> tuple[dict, str]:
    """(provenance, stored content hash) of a Parquet artifact."""
    kv = pq.ParquetFile(path).metadata.metadata
    return json.loads(kv[META_KEY.encode()]), kv[HASH_KEY.encode()].decode()


def rewrite_parquet(path: Path, edit_table=None, edit_meta=None) -> None:
    """Tamper with a Parquet artifact as a careless user or an attacker would: new values and/or edited
    provenance, keeping the old content hash (so only the reader's own check can catch it)."""
    meta, stored = footer(path)
    table = pq.read_table(path)
    table = edit_table(table) if edit_table else table
    if edit_meta:
        edit_meta(meta)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({META_KEY: json.dumps(meta, sort_keys=True), HASH_KEY: stored})
