"""Kernels of a CIFAR-shaped ResNet (issue 21): kernelscope's featurization against the real TRAK package.

The registry ResNet (widths 16, 32, 64; 78,042 parameters) is trained briefly on seeded synthetic
3 × 32 × 32 images (kernelscope.data.synthetic). In one process, at the same projection dimension K:

- kernelscope: proj_trntk (every class's gradient projected: the trNTK's features) with the Kronecker
  Hadamard projection and with a dense Rademacher one; proj_pntk (one gradient per sample);
- traker 0.3.2's CPU path doing the same all-class work: its FunctionalGradientComputer (vmap of per-sample
  gradients) of each class's logit, projected by its BasicProjector (Rademacher) — once with the whole K × P
  matrix held (block_size = K, its fastest) and once as shipped (block_size 100: blocks regenerated per batch);
- the exact trNTK (kernelscope's factored path, checked against materialized Jacobians in the tests) on a
  subsample, as the reference for each projected kernel's mean absolute error.

Reported: samples/s of each, the ratio ours / traker's, the error of each projection against the exact kernel,
the exact Gram's rate as a fraction of the machine's matmul rate, and peak resident memory.

    .venv/bin/python benchmarks/resnet_bench.py                  # N = 1000, writes results/resnet.json
    .venv/bin/python benchmarks/resnet_bench.py --n 2000 --peer-n 256 --exact-n 400
    .venv/bin/python benchmarks/resnet_bench.py --only-exact-large    # the exact trNTK of 5,000 samples alone
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from kernels_bench import machine  # the script's folder is on sys.path
from traker_featurize import traker_features

from kernelscope.kernels import kernel_spec
from kernelscope.kernels.assembly import cosine_normalize, kernel_row_blocks
from kernelscope.kernels.representation import represent
from kernelscope.models.zoo import build_resnet

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (3, 32, 32)
CLASSES = 10


def trained_resnet(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 2, seed: int = 0, build: Callable[[], torch.nn.Module] | None = None
) -> torch.nn.Module:
    """The registry ResNet (or ``build()``'s model) after a few epochs of SGD (gradients of a trained model, not
    of an initialization)."""
    torch.manual_seed(seed)
    model = build() if build else build_resnet(SHAPE, CLASSES)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
    return model.eval()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def ours(model: torch.nn.Module, x: torch.Tensor, kind: str, k: int, projection: str) -> tuple[float, np.ndarray]:
    """(samples/s, features (n, C·K) or (n, K)) of kernelscope's featurization."""
    spec = kernel_spec(model, kind, projection_dim=k, projection=projection, seed=0)
    represent(spec, x[:64])  # the projection's plan, made once per run
    start = time.perf_counter()
    features = represent(spec, x)
    return len(x) / (time.perf_counter() - start), features.double().numpy()


def cosine_gram(features: np.ndarray) -> np.ndarray:
    gram = features @ features.T
    diag = np.diag(gram).copy()
    return cosine_normalize(gram, diag, diag)


def exact_trntk(model: torch.nn.Module, x: torch.Tensor, matmul_gflops: float) -> tuple[dict, np.ndarray]:
    spec = kernel_spec(model, "trntk")
    start = time.perf_counter()
    rep = represent(spec, x)
    featurize_s = time.perf_counter() - start
    start = time.perf_counter()
    k0 = spec.gram(rep, rep).numpy()
    gram_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    gflops = 2 * len(x) ** 2 * CLASSES * params / gram_s / 1e9  # the Gram's multiply-adds over every class
    diag = np.diag(k0).copy()
    timing = {
        "samples": len(x),
        "featurize_s": round(featurize_s, 2),
        "gram_s": round(gram_s, 2),
        "gram_gflops": round(gflops, 1),
        "fraction_of_matmul_rate": round(gflops / matmul_gflops, 3),
    }
    return timing, cosine_normalize(k0, diag, diag)


def exact_trntk_large(model: torch.nn.Module, x: torch.Tensor, check_n: int, matmul_gflops: float) -> dict:
    """The exact trNTK train x train of all of x through the kernel stage's own assembly (chunk 256, the default
    2048 MB budget: every class of 5,000 samples is 15.6 GB, so it runs one class at a time), checked against the
    kernel of its first ``check_n`` samples taken in one piece (all classes held)."""
    _, small = exact_trntk(model, x[:check_n], matmul_gflops)
    spec = kernel_spec(model, "trntk")
    start = time.perf_counter()
    k = np.empty((len(x), len(x)))
    for rows, block in kernel_row_blocks(spec, x, None, chunk_size=256, memory_budget_mb=2048, progress=True):
        k[rows] = block
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    gflops = 2 * len(x) ** 2 * CLASSES * params / seconds / 1e9
    m = len(small)
    return {
        "samples": len(x),
        "seconds": round(seconds, 1),
        "plan": "class-major (one class's gradients of every sample held, 1.6 GB at N = 5,000)",
        "gram_gflops_overall": round(gflops, 1),
        "fraction_of_matmul_rate_overall": round(gflops / matmul_gflops, 3),
        "max_abs_diff_vs_small_exact": float(np.abs(k[:m, :m] - small).max()),
        "symmetric_max_abs": float(np.abs(k - k.T).max()),
    }


def mean_off_diagonal_error(approx: np.ndarray, exact: np.ndarray) -> float:
    off = ~np.eye(len(exact), dtype=bool)
    return float(np.abs(approx - exact)[off].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="samples featurized by kernelscope")
    parser.add_argument("--peer-n", type=int, default=128, help="samples featurized by traker (it is slower)")
    parser.add_argument("--exact-n", type=int, default=300, help="subsample of the exact trNTK and the errors")
    parser.add_argument("--k", type=int, default=2048, help="projection dimension")
    parser.add_argument("--exact-large-n", type=int, default=5000, help="samples of the large exact trNTK (0: skip)")
    parser.add_argument(
        "--only-exact-large", action="store_true", help="run the large exact trNTK only and update its entry in --out"
    )
    parser.add_argument("--out", default=str(RESULTS / "resnet.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    from kernelscope.data.synthetic import synthetic_images

    x_np, y_np = synthetic_images(max(args.n, 2000) + 1000, CLASSES, SHAPE, seed=0)
    x_all, y_all = torch.from_numpy(x_np), torch.from_numpy(y_np)
    x_train, y_train, x_held, y_held = x_all[:2000], y_all[:2000], x_all[-1000:], y_all[-1000:]
    model = trained_resnet(x_train, y_train)
    x = x_all[: args.n]
    report: dict = {
        "machine": machine(),
        "model": "registry ResNet (widths 16, 32, 64; one block each), 2 epochs on synthetic 3x32x32 images",
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out_accuracy": round(accuracy(model, x_held, y_held), 3),
        "projection_dim": args.k,
    }
    matmul = report["machine"]["matmul_float32_gflops"]

    timing, exact = exact_trntk(model, x[: args.exact_n], matmul)
    if args.exact_large_n:  # its own seeded images: synthetic_images of another n is another draw
        x_large = torch.from_numpy(synthetic_images(args.exact_large_n, CLASSES, SHAPE, seed=1)[0])
        large = exact_trntk_large(model, x_large, args.exact_n, matmul)
        print(f"exact trNTK of {args.exact_large_n}: {large['seconds']} s", flush=True)
        if args.only_exact_large:
            saved = json.loads(Path(args.out).read_text())
            saved["exact_trntk_large"] = {**large, "machine": report["machine"]}
            Path(args.out).write_text(json.dumps(saved, indent=2) + "\n")
            return
        report["exact_trntk_large"] = large
    report["exact_trntk"] = timing
    rates, errors = {}, {}
    for name, kind, projection in (
        ("kernelscope proj_trntk kron_hadamard", "proj_trntk", "kron_hadamard"),
        ("kernelscope proj_trntk rademacher", "proj_trntk", "rademacher"),
        ("kernelscope proj_pntk kron_hadamard", "proj_pntk", "kron_hadamard"),
    ):
        rate, features = ours(model, x, kind, args.k, projection)
        rates[name] = rate
        if kind == "proj_trntk":
            errors[name] = mean_off_diagonal_error(cosine_gram(features[: args.exact_n]), exact)
        print(f"{name}: {rate:.1f} samples/s", flush=True)
    peer_n = min(args.peer_n, args.exact_n)
    for name, block in (("traker, whole projection held", args.k), ("traker, as shipped (block_size 100)", 100)):
        rate, features = traker_features(model, x[:peer_n], args.k, block)
        rates[name] = rate
        print(f"{name}: {rate:.1f} samples/s", flush=True)
    # traker's error on the samples it featurized, against the same exact kernel's block.
    errors["traker"] = mean_off_diagonal_error(cosine_gram(features), exact[:peer_n, :peer_n])
    ours_kron = "kernelscope proj_trntk kron_hadamard"
    errors[f"{ours_kron} (same {peer_n} samples)"] = mean_off_diagonal_error(
        cosine_gram(ours(model, x[:peer_n], "proj_trntk", args.k, "kron_hadamard")[1]), exact[:peer_n, :peer_n]
    )
    best_peer = max(rate for name, rate in rates.items() if name.startswith("traker"))
    report["samples_per_s"] = {name: round(rate, 2) for name, rate in rates.items()}
    report["samples"] = {"kernelscope": args.n, "traker": peer_n}
    report["speedup_vs_traker"] = {  # the same all-class work only (proj_pntk projects one gradient per sample)
        name: round(rate / best_peer, 1) for name, rate in rates.items() if name.startswith("kernelscope proj_trntk")
    }
    report["mean_abs_error_vs_exact_trntk"] = {name: round(err, 5) for name, err in errors.items()}
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
