"""The whole counterfactual evaluation at the field's size (issue 16): m = 100 retrained models, every attributor.

Runs the stages a user runs (data, train, kernels, kGLMs, then the counterfactual stage: retraining,
attribution, LDS, brittleness, mislabel detection) in a folder of its own and reports every table with
the seconds each part took; the goal is the whole LDS evaluation of digits10 under 15 minutes on 2 cores.

    .venv/bin/python benchmarks/counterfactual_bench.py --dataset digits10
    .venv/bin/python benchmarks/counterfactual_bench.py --dataset digits2 --m 100 --brittleness-k 10,40,80
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from kernels_bench import machine  # the script's folder is on sys.path

from kernelscope.core.layout import RunLayout
from kernelscope.core.params import load_params
from kernelscope.counterfactual.brittleness_stages import brittleness_stage
from kernelscope.counterfactual.stages import (
    attribute_stage,
    check_attributors,
    lds_stage,
    mislabel_stage,
)

RESULTS = Path(__file__).resolve().parent / "results"


def prepare(params, dataset: str, layout: RunLayout) -> float:
    """The attribution run the evaluation reads: data, model, every kernel kind, every kGLM; its seconds."""
    from kernelscope.data.stages import data_stage
    from kernelscope.kernels.stages import kernel_stage
    from kernelscope.models.stages import train_stage
    from kernelscope.surrogate.stages import fit_kglm_stage

    start = time.perf_counter()
    data_stage(params, dataset, layout)
    train_stage(params, layout, progress=False)
    for kind in params.kernel.kinds:
        kernel_stage(params, layout, kind, progress=False)
        fit_kglm_stage(params, layout, kind)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits10", choices=["digits2", "digits10"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--brittleness-k", default=None, help="comma-separated k grid (default: the params file's)")
    parser.add_argument("--run", help="a folder to keep the run in (default: a temporary one)")
    parser.add_argument("--out", default=None, help="default: results/counterfactual_<dataset>.json")
    args = parser.parse_args()
    params = load_params(args.params)
    update: dict = {"m": args.m}
    if args.brittleness_k:
        update["brittleness_k"] = tuple(int(k) for k in args.brittleness_k.split(","))
    params = params.model_copy(update={"counterfactual": params.counterfactual.model_copy(update=update)})
    check_attributors(params)
    with tempfile.TemporaryDirectory(prefix="kernelscope-cf-bench-") as tmp:
        layout = RunLayout.at(args.run or tmp, args.dataset)
        seconds = {"attribution_run": prepare(params, args.dataset, layout)}
        start = time.perf_counter()
        costs = {
            name: attribute_stage(params, layout, name).summary["seconds"] for name in params.counterfactual.attributors
        }
        seconds["attributors"] = time.perf_counter() - start
        start = time.perf_counter()
        lds = lds_stage(params, layout).summary  # retrains the m models (cached blocks) and ranks
        seconds["retrain_and_lds"] = time.perf_counter() - start
        start = time.perf_counter()
        brittle = brittleness_stage(params, layout).summary if params.counterfactual.brittleness_queries else {}
        seconds["brittleness"] = time.perf_counter() - start
        start = time.perf_counter()
        flips = mislabel_stage(params, layout).summary if params.counterfactual.mislabel_fraction else {}
        seconds["mislabel"] = time.perf_counter() - start
    seconds["lds_evaluation"] = seconds["attributors"] + seconds["retrain_and_lds"]
    report = {
        "machine": machine(),
        "task": f"counterfactual evaluation of {args.dataset}, m = {args.m}, α = {params.counterfactual.alpha}",
        "goal": "lds_evaluation under 900 s on 2 cores (digits10)",
        "seconds": seconds,
        "attributor_seconds": costs,
        "lds": lds["lds"],
        "brittleness": brittle.get("brittleness", []),
        "mislabel": flips.get("mislabel", []),
    }
    out = Path(args.out or RESULTS / f"counterfactual_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps({"seconds": seconds, "lds": [(r["attributor"], round(r["lds"], 3)) for r in lds["lds"]]}, indent=2)
    )


if __name__ == "__main__":
    main()
