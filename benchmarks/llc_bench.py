"""LLC calibration benchmark (issue 17): the SGLD estimator on models whose learning coefficient is known.

For each known model (kernelscope.loss_kernel.llc_calibration) it sweeps ε × γ, applies ``calibrate`` (which
sees only the estimates) and reports the kept setting's λ̂ against the true λ, with λ̂-against-ε plots.
The goal: within 10% on every model. Run from the project root:

    .venv/bin/python benchmarks/llc_bench.py                 # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from kernels_bench import machine  # the script's folder is on sys.path

from kernelscope.loss_kernel.llc_calibration import (
    calibrate,
    plot_llc_against_epsilon,
    polynomial_potential,
    regular_regression,
    sweep,
)
from kernelscope.loss_kernel.sgld import SGLDConfig

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
GAMMAS = [0.01, 0.1, 1.0, 10.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "llc_calibration.json"))
    parser.add_argument("--plots", default=str(RESULTS / "llc_calibration"), help="folder for the λ̂-against-ε plots")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is faster and steadier
    base = SGLDConfig(chains=16, draws=200, burn_in=500, steps_between=20, batch_size=256, seed=0)
    models = [
        regular_regression(3, n=256),
        regular_regression(10, n=256),
        polynomial_potential((1, 2), n=256),
        polynomial_potential((2, 3), n=256),
        polynomial_potential((1, 1, 2, 3), n=256),
    ]
    rows = []
    for i, known in enumerate(models):
        estimates = sweep(known, base, EPSILONS, GAMMAS)
        kept = calibrate(estimates)
        plot = plot_llc_against_epsilon(Path(args.plots) / f"model-{i}.png", known, estimates)
        rows.append(
            {
                "model": known.name,
                "true_llc": known.true_llc,
                "kept": None if kept is None else {"epsilon": kept.epsilon, "gamma": kept.gamma, "llc": kept.llc},
                "relative_error": None if kept is None else (kept.llc - known.true_llc) / known.true_llc,
                "grid": [asdict(e) for e in estimates],
                "plot": str(plot.relative_to(Path(args.out).parent)),
            }
        )
        print(known.name, known.true_llc, rows[-1]["kept"], rows[-1]["relative_error"])
    report = {
        "machine": machine(),
        "task": f"SGLD LLC on known models, ε ∈ {EPSILONS}, γ ∈ {GAMMAS}, 16 chains × 200 draws 20 steps apart, "
        "nβ = m / ln m",
        "goal": "|relative error| <= 0.1 on every model",
        "models": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
