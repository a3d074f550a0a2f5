"""Kernel benchmarks (issue 3): featurization, Gram assembly, exact trNTK, peak memory.

Every speed figure is a ratio against a baseline timed in the same process, because the
machines are shared and noisy; the machine's own figures (float32 matmul rate, core count)
are written beside ours. Run from the project root:

    .venv/bin/python benchmarks/kernels_bench.py            # everything, writes benchmarks/results/kernels.json
    .venv/bin/python benchmarks/kernels_bench.py --quick    # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from kernelscope.core.param_sections import TrainParams
from kernelscope.data.datasets import make_digits
from kernelscope.kernels import compute_kernel, kernel_spec
from kernelscope.kernels.assembly import kernel_row_blocks
from kernelscope.kernels.representation import KernelSpec, represent
from kernelscope.kernels.store import write_kernel_blocks
from kernelscope.models.train import train_classifier
from kernelscope.models.zoo import build_mlp

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def machine() -> dict:
    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    seconds, _ = timed(lambda: a @ b, repeat=3)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "matmul_float32_gflops": round(2 * n**3 / seconds / 1e9, 1),
    }


def trained_digits_mlp(samples: int):
    ds = make_digits("digits10", 0.3, 0)
    result = train_classifier(ds, TrainParams(epochs=20), seed=0, progress=False)
    x = torch.from_numpy(np.concatenate([ds.train.x, ds.test.x]))[:samples]
    return result.model.eval(), x


# -- the naive baseline: what existing tools do --------------------------------------------
def naive_projected_features(
    model: torch.nn.Module, x: torch.Tensor, k: int, seed: int, batch: int = 64, block_rows: int = 256
) -> torch.Tensor:
    """Per-class vmap(grad) passes over the whole model, then a dense Gaussian projection
    regenerated block by block for every batch (as TRAK-style projectors do)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    n_params = sum(p.numel() for p in params.values())
    n_out = model(x[:1]).shape[1]
    out = torch.empty(len(x), n_out, k)
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        for c in range(n_out):

            def logit_c(p, xi, c=c):
                return functional_call(model, p, (xi.unsqueeze(0),))[0, c]

            g = vmap(grad(logit_c), in_dims=(None, 0))(params, xb)
            flat = torch.cat([t.reshape(len(xb), -1) for t in g.values()], dim=1)  # (b, P)
            for r0 in range(0, k, block_rows):
                gen = torch.Generator().manual_seed(seed * 100_003 + r0)
                proj = torch.randn(min(block_rows, k - r0), n_params, generator=gen)
                out[start : start + batch, c, r0 : r0 + block_rows] = flat @ proj.T / k**0.5
    return out


def bench_featurization(quick: bool) -> dict:
    """Samples/s of the projected trNTK features against the traker package doing the same all-class work (its
    fastest configuration, the whole projection held; and as shipped), and against the naive baseline above."""
    from traker_featurize import traker_features

    k = 2048
    n = 128 if quick else 512
    model, x = trained_digits_mlp(n)
    rates = {}
    rates["traker"], _ = traker_features(model, x, k, block_size=k)
    rates["traker_as_shipped"], _ = traker_features(model, x[:128], k, block_size=100)
    baseline_s, _ = timed(lambda: naive_projected_features(model, x, k, seed=0))
    rates["naive_baseline"] = n / baseline_s
    results = {
        "model": "MLP 64-100-100-100-10",
        "parameters": sum(p.numel() for p in model.parameters()),
        "projection_dim": k,
        "samples": n,
        **{name: {"samples_per_s": round(rate, 1)} for name, rate in rates.items()},
    }
    for projection in ("kron_hadamard", "gaussian"):
        spec = kernel_spec(model, "proj_trntk", projection_dim=k, projection=projection, seed=0)
        represent(spec, x[:64])  # build the projection once (it is reused across batches)
        seconds, _ = timed(lambda: represent(spec, x), repeat=3)
        results[projection] = {
            "samples_per_s": round(n / seconds, 1),
            "speedup_vs_traker": round(n / seconds / rates["traker"], 1),
            "speedup_vs_naive_baseline": round(baseline_s / seconds, 1),
        }
    return results


def bench_projection_error(quick: bool) -> dict:
    """Mean |proj − exact| of the cosine kernel over off-diagonal pairs, averaged over seeds."""
    k = 2048
    n = 200 if quick else 500
    model, x = trained_digits_mlp(n)
    exact = compute_kernel(model, x, kind="trntk")
    off = ~np.eye(n, dtype=bool)
    errors = {}
    for projection in ("kron_hadamard", "gaussian", "rademacher"):
        per_seed = []
        for seed in range(3):
            approx = compute_kernel(model, x, kind="proj_trntk", projection_dim=k, projection=projection, seed=seed)
            per_seed.append(float(np.abs(approx - exact)[off].mean()))
        errors[projection] = {"mean_abs_error": float(np.mean(per_seed)), "per_seed": per_seed}
    ratio = errors["kron_hadamard"]["mean_abs_error"] / errors["gaussian"]["mean_abs_error"]
    return {"projection_dim": k, "samples": n, "errors": errors, "kron_hadamard_over_dense_gaussian": round(ratio, 3)}


def bench_gram(quick: bool, matmul_gflops: float) -> dict:
    """Assembly of a normalized Gram from in-memory features, against the machine's matmul rate."""
    n, d = (1024, 2048) if quick else (2048, 8192)
    features = torch.randn(n, d)
    spec = KernelSpec(
        "features", "cosine", lambda t: t, lambda a, b: (a @ b.T).double(), lambda a: (a.double() ** 2).sum(1)
    )

    def assemble():
        out = np.empty((n, n))
        for rows, block in kernel_row_blocks(spec, features, None, chunk_size=512, memory_budget_mb=4096):
            out[rows] = block
        return out

    assemble()
    seconds, _ = timed(assemble, repeat=3)
    gflops = 2 * n * n * d / seconds / 1e9
    return {
        "n": n,
        "feature_dim": d,
        "gflops": round(gflops, 1),
        "fraction_of_matmul_rate": round(gflops / matmul_gflops, 3),
    }


def bench_exact(quick: bool) -> dict:
    n = 150 if quick else 400
    model, x = trained_digits_mlp(n)
    jac_s, k_jac = timed(lambda: compute_kernel(model, x, kind="trntk", method="jacobian"))
    fac_s, k_fac = timed(lambda: compute_kernel(model, x, kind="trntk", method="factored"), repeat=3)
    return {
        "samples": n,
        "jacobian_s": round(jac_s, 3),
        "factored_s": round(fac_s, 4),
        "speedup": round(jac_s / fac_s, 1),
        "max_abs_difference": float(np.abs(k_jac - k_fac).max()),
    }


def memory_case(case: str, out_dir: str) -> None:
    """Child process: assemble one kernel to Parquet, print peak resident memory as JSON."""
    torch.manual_seed(0)
    if case == "digits":
        ds = make_digits("digits10", 0.3, 0)
        x = torch.from_numpy(np.concatenate([ds.train.x, ds.test.x]))  # every digit: N = 1797
        kinds = {"trntk": {}, "proj_trntk": {"projection_dim": 2048}}
    else:
        x = torch.rand(20_000, 64)
        kinds = {"proj_trntk": {"projection_dim": 128}}
    model = build_mlp(64, [100, 100, 100], 10, "ntk").eval()
    report = {"case": case, "n": len(x)}
    for kind, options in kinds.items():
        spec = kernel_spec(model, kind, **options)
        start = time.perf_counter()
        ids = np.arange(len(x))
        blocks = (
            (ids[rows], block)
            for rows, block in kernel_row_blocks(spec, x, None, chunk_size=256, memory_budget_mb=1024)
        )
        path = Path(out_dir) / f"{case}-{kind}.parquet"
        write_kernel_blocks(path, blocks, len(x), ids, {"kind": kind})
        report[kind] = {
            "seconds": round(time.perf_counter() - start, 1),
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "dense_float32_mb": round(len(x) ** 2 * 4 / 2**20, 1),
        }
        path.unlink()
    report["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(report))


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_memory(quick: bool) -> list[dict]:
    cases = ["digits"] if quick else ["digits", "synthetic20k"]
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-case", case, "--tmp", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", default=str(RESULTS / "kernels.json"))
    parser.add_argument("--only", nargs="*", help="run only these sections (merged into an existing --out file)")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        memory_case(args.memory_case, args.tmp)
        return
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.only and out.exists() else {}
    report["machine"] = machine()
    print(json.dumps(report["machine"]), flush=True)
    for name, fn in (
        ("featurization", lambda: bench_featurization(args.quick)),
        ("projection_error", lambda: bench_projection_error(args.quick)),
        ("gram_assembly", lambda: bench_gram(args.quick, report["machine"]["matmul_float32_gflops"])),
        ("exact_trntk", lambda: bench_exact(args.quick)),
        ("peak_memory", lambda: bench_memory(args.quick)),
    ):
        if args.only and name not in args.only:
            continue
        report[name] = fn()
        print(name, json.dumps(report[name]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
