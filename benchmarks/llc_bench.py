"""LLC calibration benchmark (issue 17): the SGLD estimator on models whose learning coefficient is known.

For each known model (kernelscope.loss_kernel.llc_calibration) it sweeps ε × γ, applies ``calibrate`` (which
sees only the estimates) and reports the kept setting's λ̂ against the true λ, with λ̂-against-ε plots.
The goal: within 10% on every model. Run from the project root:

    .venv/bin/python benchmarks/llc_bench.py                 # about 17 minutes on 2 cores (12 of them DLNs)
    .venv/bin/python benchmarks/llc_bench.py --network digits10   # and a sweep of the trained MLP (+8 min)
    .venv/bin/python benchmarks/llc_bench.py --network digits10 --network-only   # the MLP alone, kept models kept

The network sweep has no true λ: it shows where a network's λ̂ has a plateau in ε, and how much of the
default estimate is set by γ.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from kernels_bench import machine  # the script's folder is on sys.path

from kernelscope.loss_kernel.llc_calibration import (
    KnownModel,
    calibrate,
    deep_linear_network,
    plot_llc_against_epsilon,
    polynomial_potential,
    regular_regression,
    sweep,
)
from kernelscope.loss_kernel.sgld import SGLDConfig

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
GAMMAS = [0.01, 0.1, 1.0, 10.0]
LINEAR_EPSILONS = [1e-4, 3e-4, 1e-3, 3e-3]
LINEAR_GAMMAS = [0.01, 1.0]
NETWORK_EPSILONS = [3e-5, 1e-4, 3e-4]
NETWORK_GAMMAS = [1.0, 100.0, 1000.0]


def network_sweep(dataset: str, params_file: str, plots: Path) -> dict:
    """λ̂ of the dataset's MLP (trained here by the params file's recipe) over ε × γ, minibatches of 256."""
    import tempfile

    from kernelscope.core.layout import RunLayout
    from kernelscope.core.params import load_params
    from kernelscope.core.provenance import run_model
    from kernelscope.data.stages import data_stage
    from kernelscope.models.heads import per_sample_loss
    from kernelscope.models.stages import train_stage

    params = load_params(params_file)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="kernelscope-llc-") as tmp:
        layout = RunLayout.at(tmp, dataset)
        data_stage(params, dataset, layout)
        train_stage(params, layout, progress=False)
        ds, ckpt = run_model(params, layout)
    x, y = torch.from_numpy(ds.train.x), torch.from_numpy(ds.train.y)
    known = KnownModel(f"{dataset} MLP", ckpt.model, per_sample_loss, x, y, float("nan"))
    # As for the deep linear networks: the same Langevin time at every ε (3,000 steps at ε = 1e-4), so that a
    # small ε is not simply a chain that has not mixed yet.
    base = SGLDConfig(chains=8, draws=100, burn_in=1000, steps_between=20, batch_size=256, seed=0, epsilon=1e-4)
    estimates = sweep(known, base, NETWORK_EPSILONS, NETWORK_GAMMAS, same_time=True)
    kept = calibrate(estimates)
    plot = plot_llc_against_epsilon(plots / f"network-{dataset}.png", known, estimates)
    torch.set_num_threads(1)
    return {
        "model": known.name,
        "parameters": sum(p.numel() for p in ckpt.model.parameters()),
        "sampler": {**asdict(base), "same_time": True},
        "kept": None if kept is None else {"epsilon": kept.epsilon, "gamma": kept.gamma, "llc": kept.llc},
        "grid": [asdict(e) for e in estimates],
        "plot": str(plot.relative_to(plots.parent)),
    }


@dataclass(frozen=True)
class Case:
    """A known model and the grid it is swept over."""

    known: KnownModel
    base: SGLDConfig
    epsilons: list[float]
    gammas: list[float]
    same_time: bool = False  # chains rescaled to base.epsilon's Langevin time at every ε (llc_calibration.equal_time)


def cases() -> list[Case]:
    smooth = SGLDConfig(chains=16, draws=200, burn_in=500, steps_between=20, batch_size=256, seed=0)
    # linear networks mix slowly along their flat directions: 24,000 steps at ε = 3e-4, the same time at every ε
    linear = SGLDConfig(chains=16, draws=200, burn_in=8000, steps_between=80, batch_size=256, seed=0, epsilon=3e-4)
    return [
        *(
            Case(known, smooth, EPSILONS, GAMMAS)
            for known in (
                regular_regression(3, n=256),
                regular_regression(10, n=256),
                polynomial_potential((1, 2), n=256),
                polynomial_potential((2, 3), n=256),
                polynomial_potential((1, 1, 2, 3), n=256),
            )
        ),
        *(
            Case(known, linear, LINEAR_EPSILONS, LINEAR_GAMMAS, same_time=True)
            for known in (deep_linear_network((4, 3, 4), rank=1, n=256), deep_linear_network((5, 2, 5), rank=1, n=256))
        ),
    ]


def known_rows(out: Path, plots: Path) -> list[dict]:
    """Every known model's sweep, the kept setting and its error, with a λ̂-against-ε plot each."""
    rows = []
    for i, case in enumerate(cases()):
        known = case.known
        estimates = sweep(known, case.base, case.epsilons, case.gammas, same_time=case.same_time)
        kept = calibrate(estimates)
        plot = plot_llc_against_epsilon(plots / f"model-{i}.png", known, estimates)
        rows.append(
            {
                "model": known.name,
                "true_llc": known.true_llc,
                "parameters": sum(p.numel() for p in known.model.parameters()),
                "sampler": {**asdict(case.base), "same_time": case.same_time},
                "kept": None if kept is None else {"epsilon": kept.epsilon, "gamma": kept.gamma, "llc": kept.llc},
                "relative_error": None if kept is None else (kept.llc - known.true_llc) / known.true_llc,
                "grid": [asdict(e) for e in estimates],
                "plot": str(plot.relative_to(out.parent)),
            }
        )
        print(known.name, known.true_llc, rows[-1]["kept"], rows[-1]["relative_error"], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "llc_calibration.json"))
    parser.add_argument("--plots", default=str(RESULTS / "llc_calibration"), help="folder for the λ̂-against-ε plots")
    parser.add_argument("--network", choices=["digits2", "digits10"], help="also sweep this dataset's trained MLP")
    parser.add_argument("--params", default="params.yaml", help="the recipe of --network's model")
    parser.add_argument(
        "--network-only", action="store_true", help="sweep --network alone, keeping the known models of --out"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.network_only and not args.network:
        parser.error("--network-only needs --network")
    torch.set_num_threads(1)  # tiny models: one thread is faster and steadier
    rows = json.loads(out.read_text())["models"] if args.network_only else known_rows(out, Path(args.plots))
    network = network_sweep(args.network, args.params, Path(args.plots)) if args.network else None
    report = {
        "machine": machine(),
        "task": "SGLD LLC on known models, swept over ε × γ (each model's sampler and grid beside it), 16 chains × "
        "200 draws, nβ = m / ln m",
        "goal": "|relative error| <= 0.1 on every model",
        "models": rows,
        "network": network,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
