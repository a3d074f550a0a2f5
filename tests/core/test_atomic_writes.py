"""Atomic writes in process: temporaries named per process and per write, a killed writer leaves the old file,
and stale temporaries of dead processes are removed by the next write (kernelscope.core.fileio.atomic_path).

The same guarantees across real processes (two CLI runs at once, a SIGKILLed stage) are in
tests/integration/test_concurrency.py and tests/integration/test_crash_safety.py.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from kernelscope.core.fileio import _HOST, atomic_path, remove_stale_temps


def test_temporary_names_are_unique_per_process_and_per_write(tmp_path):
    """Two writes of one target in flight at once (threads) get distinct temporaries named after this process;
    the target ends as one complete payload, never a mix."""
    target = tmp_path / "kernel.parquet"
    names, barrier = [], threading.Barrier(2)

    def write(payload: bytes) -> None:
        with atomic_path(target) as tmp:
            names.append(tmp.name)
            barrier.wait(timeout=10)  # both temporaries exist at the same time
            with open(tmp, "wb") as handle:
                for i in range(0, len(payload), 4096):
                    handle.write(payload[i : i + 4096])
                    time.sleep(0.001)

    payloads = [b"a" * 40_000, b"b" * 40_000]
    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(names)) == 2 and all(n.startswith(f".kernel.parquet.{_HOST}-{os.getpid()}.") for n in names)
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.parquet"]


def test_killed_writer_leaves_the_old_file_and_its_temp_is_cleaned_by_the_next_write(tmp_path):
    """In-process: a writer that never reaches its rename leaves the previous target intact; stale temps of dead
    processes are removed by the next write, those of live processes and other hosts are kept."""
    target = tmp_path / "artifact.json"
    target.write_text("old, complete")
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / f".artifact.json.{_HOST}-{dead.pid}.abc123.tmp"
        running = tmp_path / f".artifact.json.{_HOST}-{live.pid}.def456.tmp"
        foreign = tmp_path / f".artifact.json.otherhost-{dead.pid}.ghi789.tmp"
        for path in (stale, running, foreign):
            path.write_text("half a fil")
        with pytest.raises(RuntimeError):
            with atomic_path(target) as tmp:
                tmp.write_text("new but never fini")
                raise RuntimeError("killed")
        assert target.read_text() == "old, complete"
        assert not stale.exists()  # removed by the write that started after its writer died
        assert running.exists() and foreign.exists()
        assert remove_stale_temps(target) == []
    finally:
        live.kill()
        live.wait()
