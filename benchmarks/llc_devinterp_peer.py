"""The LLC against its peer (issue 17): kernelscope's SGLD estimator and devinterp 1.3.2's
``estimate_learning_coeff_with_summary`` on the same known models, at the same calibrated setting.

Both get the model at w*, the same data (n = 256, minibatches of 256: full-batch gradients, so neither
estimator's minibatch noise enters), the same ε, γ (devinterp's ``localization``), nβ = m / ln m, chains,
burn-in, steps between draws and draws, and L_n(w*) on the full data (devinterp's own default would average
a few batches). The settings are the ones ``calibrate`` kept in ``benchmarks/results/llc_calibration.json``
(run ``llc_bench.py`` first). What differs: the random streams, and devinterp runs its chains one after
another where kernelscope vectorizes them, so the seconds are a same-process ratio.

    .venv/bin/python benchmarks/llc_devinterp_peer.py          # about 15 minutes (devinterp: chains in turn)
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from kernels_bench import machine  # the script's folder is on sys.path
from llc_bench import cases

from kernelscope.loss_kernel.llc_calibration import KnownModel, estimate, setting

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("regular regression, d = 10", "K(w) = ½ Σ w^{2, 4}", "deep linear network [4, 3, 4], rank 1")


def devinterp_llc(known: KnownModel, config, seed: int) -> tuple[float, list[float]]:
    """devinterp's λ̂ (mean and per chain) for ``known`` at kernelscope's sampler ``config``."""
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(
        TensorDataset(known.x, known.y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )

    def evaluate(model: torch.nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        xb, yb = batch
        return known.loss_fn(model(xb), yb).mean(), {}

    with torch.no_grad():
        init_loss = known.loss_fn(known.model(known.x), known.y).mean()  # L_n(w*) on the full data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation and "nbeta passed" notices
        out = estimate_learning_coeff_with_summary(
            known.model,
            loader,
            evaluate=evaluate,
            sampling_method=SGLD,
            optimizer_kwargs={"lr": config.epsilon, "localization": config.gamma, "nbeta": config.resolved_nbeta()},
            num_draws=config.draws,
            num_chains=config.chains,
            num_burnin_steps=config.burn_in,
            num_steps_bw_draws=config.steps_between,
            init_loss=init_loss,
            seed=seed,
            verbose=False,
        )
    per_chain = [float(out[f"llc-chain/{i}"]) for i in range(config.chains)]
    return float(out["llc/mean"]), per_chain


def write_report(path: Path, rows: list[dict]) -> None:
    from importlib.metadata import version

    report = {
        "machine": machine(),
        "task": "LLC of known models, kernelscope against devinterp at the same calibrated setting",
        "devinterp": version("devinterp"),
        "models": rows,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", default=str(RESULTS / "llc_calibration.json"))
    parser.add_argument("--out", default=str(RESULTS / "llc_devinterp_peer.json"))
    parser.add_argument("--models", default=";".join(MODELS), help="model names separated by ';' (default: all three)")
    args = parser.parse_args()
    import devinterp  # noqa: F401  (fail before any work when the peer is missing)

    torch.set_num_threads(1)  # both estimators on one thread: a like-for-like ratio
    kept = {m["model"]: m["kept"] for m in json.loads(Path(args.calibration).read_text())["models"]}
    rows = []
    for case in cases():
        name = case.known.name
        if name not in args.models.split(";"):  # the names hold commas
            continue
        config = setting(case.base, kept[name]["epsilon"], kept[name]["gamma"], case.same_time)
        start = time.perf_counter()
        ours = estimate(case.known, config)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        peer, peer_chains = devinterp_llc(case.known, config, seed=config.seed)
        peer_s = time.perf_counter() - start
        # Two independent 16-chain means: their difference in units of its standard error.
        se = math.sqrt(sum(np.var(c, ddof=1) / len(c) for c in (ours.llc_per_chain, peer_chains)))
        row = {
            "model": name,
            "true_llc": case.known.true_llc,
            "setting": {**asdict(config), "nbeta": config.resolved_nbeta()},
            "kernelscope": {"llc": ours.llc, "error": ours.llc / case.known.true_llc - 1, "seconds": ours_s},
            "devinterp": {"llc": peer, "error": peer / case.known.true_llc - 1, "seconds": peer_s},
            "difference_in_standard_errors": (ours.llc - peer) / se,
            "speedup": peer_s / ours_s,
        }
        rows.append(row)
        write_report(Path(args.out), rows)  # after every model: a long run keeps what it has measured
        print(
            f"{name}: true {case.known.true_llc:.4g}, kernelscope {ours.llc:.4g} ({ours_s:.0f} s), "
            f"devinterp {peer:.4g} ({peer_s:.0f} s), {row['difference_in_standard_errors']:+.2f} s.e.",
            flush=True,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
