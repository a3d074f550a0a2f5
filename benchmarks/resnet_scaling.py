"""ResNet kernels from 1,000 to 50,000 training points (issue 21's tables), beside the real TRAK package.

For each model (the registry ResNet, widths 16-32-64 with one block a stage; a ResNet18-width variant,
64-128-256-512 with two blocks a stage, 11 M parameters), trained briefly on seeded synthetic 3 × 32 × 32 images,
and each (kernel kind, N), the train × train kernel is computed through the kernel stage's own assembly
(`kernel_row_blocks`: featurize, hold the training side while it fits `--budget-mb`, one Gram per row block),
each in a process of its own so that its peak resident memory is its own. In the same run traker 0.3.2's CPU
featurization (its FunctionalGradientComputer + BasicProjector, every class's logit, the whole projection
held: its fastest) featurizes a subsample; featurization is per sample, so its rate is its rate at any N, and the
projected kernels' ratio to it is reported at every N.

    .venv/bin/python benchmarks/resnet_scaling.py                    # writes results/resnet_scaling.json
    .venv/bin/python benchmarks/resnet_scaling.py --models registry --sizes proj_pntk=1000,5000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from kernels_bench import machine, peak_rss_mb  # the script's folder is on sys.path
from resnet_bench import CLASSES, SHAPE, accuracy, trained_resnet
from traker_featurize import traker_features

from kernelscope.kernels import kernel_spec
from kernelscope.kernels.assembly import kernel_row_blocks

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {  # name: (widths, blocks per stage)
    "registry": ((16, 32, 64), 1),
    "resnet18_width": ((64, 128, 256, 512), 2),
}
EPOCHS = {"registry": 2, "resnet18_width": 1}  # of SGD on 2,000 images before the kernels
DEFAULT_SIZES = {
    "registry": "proj_pntk=1000,5000,20000,50000;proj_trntk=1000,5000,10000;trntk=1000",
    "resnet18_width": "proj_pntk=256;proj_trntk=128;trntk=64",
}
# traker holds its K × P projection (block_size K, its fastest) or regenerates it in blocks for every batch and
# class: at P = 11 M that is 92 GB held, or 10 × 2048 × 11 M random numbers drawn per batch; not run there.
DEFAULT_PEER_N = {"registry": 128, "resnet18_width": 0}
TRAIN_N = 2000


def write_images(path: Path, n: int) -> None:
    """One seeded draw of n synthetic images, written once for every kernel's process (.npy, read mmapped)."""
    from kernelscope.data.synthetic import synthetic_images

    np.save(path, synthetic_images(n, CLASSES, SHAPE, seed=1)[0])


def images(path: Path, n: int) -> torch.Tensor:
    """The first n images of the draw (a copy: only these n are resident)."""
    return torch.from_numpy(np.array(np.load(path, mmap_mode="r")[:n]))


def one(
    model_file: Path, image_file: Path, widths: tuple[int, ...], blocks: int, kind: str, n: int, k: int, budget_mb: int
) -> dict:
    """Compute one train × train kernel in this process; its seconds, rate and peak memory."""
    from kernelscope.models.zoo import build_resnet

    torch.set_num_threads(2)
    model = build_resnet(SHAPE, CLASSES, widths, blocks)
    model.load_state_dict(torch.load(model_file, weights_only=True))
    model.eval()
    x = images(image_file, n)
    base_rss = peak_rss_mb()
    options = {"projection_dim": k, "projection": "kron_hadamard", "seed": 0} if kind.startswith("proj") else {}
    spec = kernel_spec(model, kind, **options)
    start = time.perf_counter()
    first_block_s = None
    for _ in kernel_row_blocks(spec, x, None, chunk_size=256, memory_budget_mb=budget_mb):
        # The first block comes after the whole training side is featurized (or, class-major, after every class).
        first_block_s = first_block_s or time.perf_counter() - start
    seconds = time.perf_counter() - start
    return {
        "kind": kind,
        "n": n,
        "seconds": round(seconds, 1),
        "samples_per_s": round(n / seconds, 2),
        "seconds_to_first_block": round(first_block_s or 0.0, 1),
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb_before_kernel": base_rss,
    }


def peer(model: torch.nn.Module, x: torch.Tensor, k: int) -> dict | None:
    if not len(x):
        return None
    rate, _ = traker_features(model, x, k, k)
    return {"samples": len(x), "samples_per_s": round(rate, 2), "block_size": k}


def parse_sizes(text: str) -> list[tuple[str, int]]:
    """'proj_pntk=1000,5000;trntk=1000' -> [(proj_pntk, 1000), (proj_pntk, 5000), (trntk, 1000)]."""
    runs = []
    for part in filter(None, text.split(";")):
        kind, sizes = part.split("=")
        runs += [(kind.strip(), int(n)) for n in sizes.split(",")]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="registry,resnet18_width", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--sizes", default=None, help="kind=N,N;kind=N (default: per model, see DEFAULT_SIZES)")
    parser.add_argument("--peer-n", type=int, default=None, help="samples featurized by traker (default per model)")
    parser.add_argument("--k", type=int, default=2048, help="projection dimension")
    parser.add_argument("--budget-mb", type=int, default=4096, help="kernel.memory_budget_mb of each kernel")
    parser.add_argument("--out", default=str(RESULTS / "resnet_scaling.json"))
    parser.add_argument(
        "--one", nargs=6, metavar=("MODEL_FILE", "IMAGES", "MODEL", "KIND", "N", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        model_file, image_file, name, kind, n, out = args.one
        widths, blocks = MODELS[name]
        result = one(Path(model_file), Path(image_file), widths, blocks, kind, int(n), args.k, args.budget_mb)
        Path(out).write_text(json.dumps(result))
        return

    torch.set_num_threads(2)
    from kernelscope.models.zoo import build_resnet

    report: dict = {"machine": machine(), "projection_dim": args.k, "memory_budget_mb": args.budget_mb, "models": {}}
    if Path(args.out).is_file():  # keep the other models' entries of an earlier run
        report["models"] = json.loads(Path(args.out).read_text()).get("models", {})
    from kernelscope.data.synthetic import synthetic_images

    x_np, y_np = synthetic_images(TRAIN_N + 1000, CLASSES, SHAPE, seed=0)  # the models' own draw, as resnet_bench
    x_all, y_all = torch.from_numpy(x_np), torch.from_numpy(y_np)
    x_train, y_train, x_held, y_held = x_all[:TRAIN_N], y_all[:TRAIN_N], x_all[TRAIN_N:], y_all[TRAIN_N:]
    with tempfile.TemporaryDirectory() as tmp:
        image_file = Path(tmp) / "images.npy"
        runs = {name: parse_sizes(args.sizes or DEFAULT_SIZES[name]) for name in args.models.split(",")}
        write_images(image_file, max([n for rows in runs.values() for _, n in rows] + [args.peer_n or 128]))
        for name, sizes in runs.items():
            widths, blocks = MODELS[name]
            build = lambda w=widths, b=blocks: build_resnet(SHAPE, CLASSES, w, b)  # noqa: E731
            model = trained_resnet(x_train, y_train, epochs=EPOCHS[name], build=build)
            model_file = Path(tmp) / f"{name}.pt"
            torch.save(model.state_dict(), model_file)
            peer_n = args.peer_n or DEFAULT_PEER_N[name]
            entry = {
                "machine": report["machine"],  # this model's run (another model's may be another day's)
                "training_epochs": EPOCHS[name],
                "widths": list(widths),
                "blocks_per_stage": blocks,
                "parameters": sum(p.numel() for p in model.parameters()),
                "held_out_accuracy": round(accuracy(model, x_held, y_held), 3),
                "traker": peer(model, images(image_file, peer_n), args.k),
                "kernels": [],
            }
            print(f"{name}: {entry['parameters']} parameters, traker {entry['traker']}", flush=True)
            for kind, n in sizes:
                out = Path(tmp) / f"{name}-{kind}-{n}.json"
                command = [sys.executable, __file__, "--k", str(args.k), "--budget-mb", str(args.budget_mb)]
                subprocess.run(
                    [*command, "--one", str(model_file), str(image_file), name, kind, str(n), str(out)], check=True
                )
                row = json.loads(out.read_text())
                if kind == "proj_trntk" and entry["traker"]:  # the same all-class work as traker's featurization
                    row["ratio_vs_traker"] = round(row["samples_per_s"] / entry["traker"]["samples_per_s"], 1)
                entry["kernels"].append(row)
                print(f"  {json.dumps(row)}", flush=True)
                report["models"][name] = entry
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")  # each row kept as it comes
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
