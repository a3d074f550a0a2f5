"""Loss-kernel benchmark (issue 6): probe evaluation and chain steps, vectorized against a plain loop.

Per-sample losses of a probe set at every draw dominate the cost of the loss kernel. Timed in
this process: the probe set evaluated for several chains with one `torch.func.vmap` call over
stacked weights, against a plain loop of one model evaluation per chain (measured here: the loop
is about 2x faster on CPU, so the sampler uses it), and SGLD chain steps with 1 and 4 chains
vectorized (their minibatch gradients in one vmap call). The JSON in benchmarks/results/ holds
the machine's figures beside the ratios.

    .venv/bin/python benchmarks/loss_kernel_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from kernelscope.data.datasets import make_digits
from kernelscope.loss_kernel.sgld import SGLDConfig, sample
from kernelscope.models.zoo import build_mlp

RESULTS = Path(__file__).resolve().parent / "results"


def per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


def probe_evaluation(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chains: int, repeats: int = 5) -> dict:
    """Losses of every probe point under `chains` weight vectors: one vmap call against a loop."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    stacked = {
        n: p.unsqueeze(0).repeat(chains, *([1] * p.dim())) + 1e-3 * torch.randn(chains, *p.shape)
        for n, p in params.items()
    }

    def losses(p: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return per_sample(functional_call(model, p, (xs,)), ys)

    batched = vmap(losses, in_dims=(0, None, None))

    def vectorized() -> torch.Tensor:
        with torch.no_grad():
            return batched(stacked, x, y)

    def loop() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([losses({n: v[c] for n, v in stacked.items()}, x, y) for c in range(chains)])

    assert torch.allclose(vectorized(), loop(), atol=1e-5)
    timings = {}
    for name, fn in (("vectorized", vectorized), ("loop", loop)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings[name] = (time.perf_counter() - start) / repeats
    evaluated = chains * len(x)
    return {
        "chains": chains,
        "probes": len(x),
        "losses_per_s_vectorized": round(evaluated / timings["vectorized"]),
        "losses_per_s_loop": round(evaluated / timings["loop"]),
        "speedup": round(timings["loop"] / timings["vectorized"], 2),
    }


def chain_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chains: int) -> dict:
    config = SGLDConfig(
        epsilon=1e-4, gamma=1000, chains=chains, draws=20, burn_in=0, steps_between=5, batch_size=256, seed=0
    )
    start = time.perf_counter()
    sample(model, per_sample, x, y, x[:256], y[:256], config)
    seconds = time.perf_counter() - start
    steps = config.draws * config.steps_between
    return {"chains": chains, "chain_steps_per_s": round(steps * chains / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "loss_kernel.json"))
    args = parser.parse_args()
    ds = make_digits("digits10", 0.3, 0)
    torch.manual_seed(0)
    model = build_mlp(64, [100, 100, 100], 10, "ntk").eval()
    x = torch.cat([torch.from_numpy(ds.train.x), torch.from_numpy(ds.test.x)])
    y = torch.cat([torch.from_numpy(ds.train.y), torch.from_numpy(ds.test.y)])
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "probe_evaluation": [probe_evaluation(model, x, y, c) for c in (1, 4, 16)],
        "chain_steps": [chain_steps(model, x[: len(ds.train.y)], y[: len(ds.train.y)], c) for c in (1, 4)],
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
