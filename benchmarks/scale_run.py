"""The attribution flow at the paper's scale (issue 21): the registry ResNet on N synthetic CIFAR-shaped training
images (3 × 32 × 32, 10 classes, a tenth more held out; kernelscope.data.synthetic), its proj-pNTK kernels stored
top-k, on a Dask LocalCluster; then the same kernels from the plain sequential stage, and the kGLM stage alone in its
own process.

Reported (results/scale_<N>.json): each step's seconds; the Dask workers' and the kGLM process's peak resident
memory; whether the Dask kernels are the sequential stage's bytes; τ_K, TAD and the kGLM's test accuracy.

    .venv/bin/python benchmarks/scale_run.py --n 50000        # about an hour on 2 cores
    .venv/bin/python benchmarks/scale_run.py --n 2000 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from kernels_bench import machine  # the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KIND = "proj_pntk"


def scale_params(n_train: int, epochs: int, outputs: Path) -> dict:
    """params.yaml for the run: n_train training images (a tenth more held out), top-k storage, the Dask runner with
    one row task per worker and split (each task featurizes the whole training side, so more tasks cost more)."""
    n_total = n_train * 11 // 10
    return {
        "seed": 0,
        "datasets": ["synth"],
        "outputs": str(outputs),
        "data": {"test_fraction": 1 / 11},
        "sources": {
            "synth": {
                "data": {"format": "synthetic_images", "synthetic_samples": n_total},
                "model": {"registry": "resnet"},
            }
        },
        "resnet": {"epochs": epochs},
        "kernel": {"kinds": [KIND], "storage": "topk", "topk": 256, "chunk_size": 256},
        "scale": {"runner": "dask", "dask_workers": 2, "dask_threads_per_worker": 1, "row_tasks": 2},
    }


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of one child process, from the kernel's accounting of that child (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000, help="training images")
    parser.add_argument("--epochs", type=int, default=2, help="ResNet training epochs")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kernelscope-scale-"))
    params_file = work / "params.yaml"
    work.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(scale_params(args.n, args.epochs, work / "flow")))
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    report: dict = {
        "machine": machine(),
        "n_train": args.n,
        "kind": KIND,
        "params": scale_params(args.n, args.epochs, Path("<work>/flow")),
    }

    # 1. The flow on a LocalCluster this script starts, so the workers' peak memory can be read afterwards.
    flow_script = f"""
import json, resource, sys
from distributed import Client, LocalCluster
from kernelscope.core.params import load_params, params_from_dict
from flows.surrogate import attribution
params = load_params({str(params_file)!r})
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
with cluster, Client(cluster) as client:
    scale = {{**params.scale.model_dump(mode="json"), "dask_address": cluster.scheduler_address}}
    params = params_from_dict({{**params.model_dump(mode="json"), "scale": scale}})
    result = attribution(params=params, dataset="synth", track=False)
    workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps({{"worker_peak_rss_mb": sorted(workers.values()), "tasks": result["tasks"]}}))
"""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", flow_script], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    report["flow_seconds"] = round(time.perf_counter() - start, 1)
    report["flow"] = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])
    run = work / "flow" / "synth"
    report["split_sizes"] = {
        split: pq.ParquetFile(run / "data" / f"{split}.parquet").metadata.num_rows for split in ("train", "test")
    }
    metrics = json.loads((run / "kglm" / KIND / "metrics.json").read_text())
    keep = ("tau_k", "tad", "r_miss", "kglm_accuracy", "nn_accuracy", "n_test", "kglm_converged")  # no local paths
    report["metrics"] = {key: metrics[key] for key in keep if key in metrics}
    print(json.dumps(report, indent=2), flush=True)

    # 2. The same kernels from the plain stage, one process, on a copy of the run's data and model.
    seq = work / "sequential" / "synth"
    for part in ("data", "model"):
        shutil.copytree(run / part, seq / part, dirs_exist_ok=True)
    cli = [sys.executable, "-m", "kernelscope.cli"]
    common = ["--params", str(params_file), "--out", str(work / "sequential"), "--dataset", "synth", "--quiet"]
    seconds, rss = peak_rss_mb([*cli, "kernel", *common, "--kind", KIND], env)
    report["sequential_kernel_stage"] = {"seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1)}
    same = {}
    for split in ("train", "test"):
        a, b = (r / "kernels" / KIND / f"{split}.parquet" for r in (run, seq))
        same[split] = a.read_bytes() == b.read_bytes()
        report.setdefault("kernel_file_mb", {})[split] = round(a.stat().st_size / 2**20, 1)
    report["dask_bytes_equal_sequential"] = same

    # 3. The kGLM stage alone, in its own process: its peak memory is the fit on the top-k kernel.
    seconds, rss = peak_rss_mb([*cli, "kglm", *common, "--no-track"], env)
    report["kglm_stage"] = {"seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1)}
    (RESULTS / f"scale_{args.n}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
