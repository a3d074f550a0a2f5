"""Cached task results never run code: they persist as plain JSON, and a record that names another
serializer (Prefect would import it and unpickle the payload) is refused before Prefect parses it.
And a cached result is trusted only while every file its stage wrote is there with the bytes it wrote."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kernelscope.core.results import Output, StageResult
from tasks import results
from tasks.results import ResultJSON, check_record

pytestmark = pytest.mark.integration


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_results_round_trip_exactly():
    serializer = ResultJSON()
    value = {
        "blocks": [(np.arange(4, dtype=np.int64), np.ones((2, 3), np.float32))],
        "tau_k": float("nan"),
        "pair": (1, "a"),
        "nested": {"r_miss": float("-inf"), "flags": [True, None]},
        7: "int key",
    }
    back = serializer.loads(serializer.dumps(value))
    ids, block = back["blocks"][0]
    assert (
        ids.dtype == np.int64
        and block.dtype == np.float32
        and block.shape == (2, 3)
        and np.array_equal(ids, np.arange(4))
    )
    assert (
        np.isnan(back["tau_k"])
        and back["nested"]["r_miss"] == float("-inf")
        and back["pair"] == (1, "a")
        and back[7] == "int key"
    )
    with pytest.raises(TypeError, match="numeric arrays only"):
        serializer.dumps({"x": np.array(["a"], dtype=object)})
    with pytest.raises(TypeError, match="cannot hold a PosixPath"):
        serializer.dumps({"x": Path("a")})


def test_stage_results_round_trip_with_their_outputs(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"png")
    summary = {"kind": "trntk", "tau_k": float("nan"), "__odd": (1, 2)}
    result = StageResult.of(summary, [tmp_path / "metrics.json", tmp_path / "plots"])
    serializer = ResultJSON()
    back = serializer.loads(serializer.dumps(result))
    assert isinstance(back, StageResult) and back.outputs == result.outputs and back.summary["__odd"] == (1, 2)
    assert np.isnan(back.summary["tau_k"]) and not back.stale()
    (tmp_path / "plots" / "a.png").write_bytes(b"PNG")  # a folder output is checked by its tree hash
    assert back.stale() == [Output(str(tmp_path / "plots"), result.outputs[1].sha256)]
    with pytest.raises(ValueError, match="malformed StageResult"):
        serializer.loads(b'{"__stage_result__": {"outputs": [["only a path"]], "summary": {}}}')
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StageResult.of({}, [tmp_path / "never-written"])


def test_foreign_records_are_refused_by_their_bytes(tmp_path):
    ours = json.dumps(
        {"metadata": {"serializer": {"type": "kernelscope-json"}, "storage_block_id": None}, "result": "1"}
    ).encode()
    assert check_record(tmp_path / "r", ours) == ours
    for serializer in (
        {"type": "pickle", "picklelib": "cloudpickle"},
        {"type": "json"},
        {"type": "kernelscope-json", "extra": 1},
    ):
        record = json.dumps({"metadata": {"serializer": serializer}, "result": ""}).encode()
        with pytest.raises(Exception, match="not a kernelscope JSON record"):
            check_record(tmp_path / "r", record)
    with pytest.raises(Exception, match="not a kernelscope JSON record"):
        check_record(tmp_path / "r", b"\x80\x04 a raw pickle")


def test_a_tampered_cache_record_runs_nothing(prefect_harness, tmp_path):
    """Run a cached task, replace its record with a pickle that would create a marker, run it again:
    refused, no marker."""
    from prefect import flow, task

    from tasks.caching import CACHED_TASK, result_storage

    @task(
        name="integrity-probe", cache_result_in_memory=False, **CACHED_TASK
    )  # every hit reads the file, as a new process would
    def probe(n: int) -> dict:
        return {"n": n, "values": np.arange(n, dtype=np.float32)}

    @flow
    def run(n: int) -> dict:
        return probe(n)

    marker = tmp_path / "PWNED"
    before = set(result_storage().glob("*")) if result_storage().exists() else set()
    first = run(int(np.random.default_rng().integers(10**6, 10**7)))  # a fresh cache key
    assert np.array_equal(first["values"], np.arange(first["n"], dtype=np.float32))
    again = run(first["n"])  # a cache hit, decoded from plain JSON
    assert again["n"] == first["n"] and np.array_equal(again["values"], first["values"])
    written = sorted(set(result_storage().glob("*")) - before)
    assert written, "the task persisted no result"
    for path in written:
        assert json.loads(path.read_text())["metadata"]["serializer"] == {"type": "kernelscope-json"}
        _poison(path, marker)
    third = run(first["n"])  # Prefect treats the refused record as a miss and runs the task afresh
    assert np.array_equal(third["values"], first["values"]) and not marker.exists()
    for path in written:  # and the record is kernelscope's again
        assert json.loads(path.read_text())["metadata"]["serializer"] == {"type": "kernelscope-json"}
        _poison(path, marker)
    # The control: without the check, the same record does run its payload (so the test above can fail).
    folders = set(results._RESULT_FOLDERS)
    results._RESULT_FOLDERS.clear()
    results._RESULT_FOLDERS.add(tmp_path / "elsewhere")
    try:
        run(first["n"])
    except Exception:
        pass
    finally:
        results._RESULT_FOLDERS.clear()
        results._RESULT_FOLDERS.update(folders)
    assert marker.exists()


def _poison(path: Path, marker: Path) -> None:
    """Rewrite a record as an attacker would: Prefect's own pickle serializer and a payload that creates ``marker``."""
    import base64

    record = json.loads(path.read_text())
    record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    record["result"] = base64.encodebytes(pickle.dumps(_Payload(marker))).decode()
    path.write_text(json.dumps(record))


def test_a_cache_hit_whose_outputs_changed_is_run_again(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    """Every output of a cached result is checked: a deleted or edited file the old guard never looked at (it checked
    one path per task) makes its task run again, and a kernel file that changed is recomputed, not trusted."""
    from flows.surrogate import attribution
    from kernelscope.core.layout import RunLayout
    from kernelscope.core.params import params_from_dict

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = params_from_dict(tiny_params_dict)
    kwargs = dict(dataset="digits2", params=params, outputs=str(tmp_path / "out"), track=False)
    layout = RunLayout(tmp_path / "out" / "digits2")
    kglm = layout.kglm_dir("trntk")
    attribution(**kwargs)
    attributions = (kglm / "attributions.parquet").read_bytes()
    metrics, points = kglm / "metrics.json", kglm / "probabilities.csv"
    written = metrics.stat().st_mtime_ns

    # 1. attributions.parquet deleted, metrics.json kept: evaluate runs again (it alone writes both).
    (kglm / "attributions.parquet").unlink()
    again = attribution(**kwargs)
    assert again["tasks"] == 7 and again["cache_hits"] == 6
    assert (kglm / "attributions.parquet").read_bytes() == attributions and metrics.stat().st_mtime_ns > written

    # 2. One byte of an output edited: the same.
    before = points.read_bytes()
    points.write_bytes(before[:-2] + bytes([before[-2] ^ 1]) + before[-1:])
    edited = attribution(**kwargs)
    assert edited["tasks"] == 7 and edited["cache_hits"] == 6 and points.read_bytes() == before

    # 3. One byte of a kernel file edited: its rows are computed again and written (the writer refreshes its cache).
    kernel = layout.kernel_path("trntk", "test")
    original = kernel.read_bytes()
    kernel.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    recomputed = attribution(**kwargs)
    assert recomputed["tasks"] == 9 and recomputed["cache_hits"] == 6  # 2 row tasks and the writer ran
    assert kernel.read_bytes() == original
    settled = attribution(**kwargs)
    assert settled["cache_hits"] == settled["tasks"] == 7
