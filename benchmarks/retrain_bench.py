"""Retraining benchmark (issue 16): stacked training of many digits10 MLPs against the loop of single trainings.

Both run in this process on the same subsets and seeds; the figure is the ratio of seconds per model (the
machines are shared and noisy). The loop is kernelscope.models.train.train_classifier, one model after
another, as a user without the engine would retrain. Run from the project root:

    .venv/bin/python benchmarks/retrain_bench.py                 # 100 models, params.yaml's recipe (slow)
    .venv/bin/python benchmarks/retrain_bench.py --epochs 20 --loop-models 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from kernels_bench import machine  # the script's folder is on sys.path

from kernelscope.core.param_sections import TrainParams
from kernelscope.counterfactual.subsets import draw_subsets
from kernelscope.data.datasets import make_digits, restricted
from kernelscope.models.stacked_training import train_on_subsets
from kernelscope.models.train import train_classifier

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--loop-models", type=int, default=10, help="single trainings timed for the baseline")
    parser.add_argument("--epochs", type=int, default=TrainParams().epochs)
    parser.add_argument("--stacks", default="16,32,50,100", help="models per stacked step to time")
    parser.add_argument("--out", default=str(RESULTS / "retrain.json"))
    args = parser.parse_args()
    ds = make_digits("digits10", 0.3, 0)
    section = TrainParams(epochs=args.epochs)  # params.yaml's MLP recipe: SGD, batch 16, lr 0.5
    masks = draw_subsets(len(ds.train.y), args.models, 0.5, seed=0)
    rows = np.stack([np.flatnonzero(mask) for mask in masks])
    seeds = 1000 + np.arange(args.models)
    train_classifier(restricted(ds, masks[0]), TrainParams(epochs=1), 0, progress=False)  # warm up

    def timed_loop() -> float:
        start = time.perf_counter()
        for k in range(args.loop_models):
            train_classifier(restricted(ds, masks[k]), section, int(seeds[k]), progress=False)
        return (time.perf_counter() - start) / args.loop_models

    loop_before = timed_loop()
    stacked = []
    for size in (int(s) for s in args.stacks.split(",")):
        start = time.perf_counter()
        for first in range(0, args.models, size):
            train_on_subsets(ds, section, rows[first : first + size], seeds[first : first + size])
        stacked.append({"models_per_stack": size, "seconds_per_model": (time.perf_counter() - start) / args.models})
    loop_after = timed_loop()
    loop = min(loop_before, loop_after)  # the faster of the two loop timings: the ratio errs against the stack
    for row in stacked:
        row["speedup"] = loop / row["seconds_per_model"]
    report = {
        "machine": machine(),
        "task": f"{args.models} digits10 MLPs (64-100-100-100-10, SGD batch 16) on 50% subsets, {args.epochs} epochs",
        "loop_seconds_per_model": loop,
        "loop_seconds_per_model_before_and_after": [loop_before, loop_after],
        "stacked": stacked,
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
