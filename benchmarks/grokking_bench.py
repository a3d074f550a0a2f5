"""Grokking benchmark (issue 17, item 1): the multitask model of params.yaml trained for 5 seeds.

For each seed: the step and the seconds at which test accuracy first reaches 99% on both tasks (evaluated
every ``multitask.eval_every`` steps), the training time, the final accuracies, and whether a second run of
seed 0 gives the same bytes. With ``--baseline`` the same runs without the Grokfast filter (λ = 0), the lever
the default relies on. Goal: every seed grokked, each training ≤ 3 minutes on 2 cores. Run from the root:

    .venv/bin/python benchmarks/grokking_bench.py              # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/grokking_bench.py --baseline   # and without Grokfast (+8 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from kernels_bench import machine  # the script's folder is on sys.path

from kernelscope.core.param_loss_kernel import MultitaskParams
from kernelscope.core.params import load_params
from kernelscope.loss_kernel.multitask_stages import train_by_section

RESULTS = Path(__file__).resolve().parent / "results"


def weights_sha256(model: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()


def train_seed(mp: MultitaskParams, seed: int, grokfast_lamb: float) -> dict:
    model, acc, curve = train_by_section(mp.model_copy(update={"grokfast_lamb": grokfast_lamb}), seed)
    return {
        "seed": seed,
        "steps_to_grok": curve.steps_to_grok(),
        "seconds_to_grok": curve.seconds_to_grok(),
        "training_seconds": curve.seconds[-1],
        "final": acc,
        "weights_sha256": weights_sha256(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--baseline", action="store_true", help="also train without Grokfast (λ = 0)")
    args = parser.parse_args()
    mp = load_params(args.params).multitask
    settings = {"grokfast": mp.grokfast_lamb, **({"no_grokfast": 0.0} if args.baseline else {})}
    out: dict = {"machine": machine(), "threads": mp.threads, "multitask": mp.model_dump(mode="json"), "runs": {}}
    for name, lamb in settings.items():
        runs = []
        for seed in range(args.seeds):
            runs.append(train_seed(mp, seed, lamb))
            r = runs[-1]
            print(
                f"{name} seed {seed}: grokked at step {r['steps_to_grok']} ({r['seconds_to_grok']} s), "
                f"training {r['training_seconds']:.1f} s, final {r['final']}",
                flush=True,
            )
        out["runs"][name] = runs
    again = train_seed(mp, 0, mp.grokfast_lamb)
    out["seed0_reproducible"] = again["weights_sha256"] == out["runs"]["grokfast"][0]["weights_sha256"]
    out["all_grokked"] = all(r["steps_to_grok"] is not None for r in out["runs"]["grokfast"])
    out["max_training_seconds"] = max(r["training_seconds"] for r in out["runs"]["grokfast"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grokking.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("seed0_reproducible", "all_grokked", "max_training_seconds")}))


if __name__ == "__main__":
    main()
