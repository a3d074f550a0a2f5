"""SGLD sampling from the localized, tempered posterior around trained weights w* (MATH.md, loss kernel).

p(w) ∝ exp(−nβ L_n(w) − (γ/2) ‖w − w*‖²);  one step on a minibatch B:
    w ← w − (ε/2) [nβ ∇L_B(w) + γ (w − w*)] + sqrt(ε) η,   η ~ N(0, I).

Chains run vectorized: every parameter carries a leading chain axis and one ``torch.func`` call
takes the minibatch gradients of all chains. The per-sample losses of the probe set at each
draw (eval mode) are evaluated chain by chain, which is faster on CPU for large probe sets
(benchmarks/loss_kernel_bench.py). Every random choice comes from one seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from kernelscope.core.errors import KernelscopeError
from kernelscope.core.progress import Progress
from kernelscope.core.threads import fixed_threads
from kernelscope.loss_kernel.sampler_health import health_warnings, top_curvature

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs (b, ...), targets (b,)) -> (b,)


@dataclass(frozen=True)
class SGLDConfig:
    epsilon: float = 1e-4  # step size ε
    gamma: float = 100.0  # localization γ
    nbeta: float | None = None  # inverse temperature nβ; None: m / ln m with m the minibatch size
    chains: int = 4
    draws: int = 100
    burn_in: int = 50  # steps before the first draw
    steps_between: int = 5  # steps between draws
    batch_size: int = 256  # minibatch size m
    seed: int = 0
    section: str = "loss_kernel"  # the params.yaml section these came from, named in error messages
    retries: int = 0  # divergences tolerated: each restarts every chain from w* at half the step size
    threads: int | None = None  # torch threads while sampling (the draws depend on the count); None: the caller's

    @classmethod
    def from_section(cls, section: Any, name: str, batch_size: int, seed: int, threads: int) -> SGLDConfig:
        """The sampler of a params section (loss_kernel, multitask: an ``SGLDParams``) named ``name``; the section
        names its minibatch size and thread count in its own way."""
        return cls(
            epsilon=section.epsilon,
            gamma=section.gamma,
            nbeta=section.nbeta,
            chains=section.chains,
            draws=section.draws,
            burn_in=section.burn_in,
            steps_between=section.steps_between,
            batch_size=batch_size,
            seed=seed,
            section=name,
            retries=section.divergence_retries,
            threads=threads,
        )

    def resolved_nbeta(self) -> float:
        if self.nbeta is not None:
            return float(self.nbeta)
        m = max(self.batch_size, 2)
        return m / math.log(m)


def sgld_step(
    w: torch.Tensor,
    grad_loss: torch.Tensor,
    w_star: torch.Tensor,
    epsilon: float,
    gamma: float,
    nbeta: float,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One SGLD update of flat weights (any leading shape): the formula above, with η = ``noise``."""
    return w - 0.5 * epsilon * (nbeta * grad_loss + gamma * (w - w_star)) + math.sqrt(epsilon) * noise


@dataclass
class SGLDResult:
    probe_losses: np.ndarray  # (n_probe, chains, draws): ℓ(z; w_d)
    loss_at_optimum: np.ndarray  # (n_probe,): ℓ(z; w*)
    trace: np.ndarray  # (chains, steps): minibatch loss at every step
    train_loss_at_optimum: float  # L_n(w*) on the training set
    draw_train_losses: np.ndarray  # (chains, draws): L_n at each draw, estimated on a fixed evaluation batch
    nbeta: float
    epsilon: float  # the step size of the draws (below the configured one after a divergence)
    warnings: list[str] = field(default_factory=list)
    curvature: float = math.nan  # λ_max of the minibatch loss Hessian at the last draw of chain 0
    stability: float = math.nan  # ε (nβ λ_max + γ) / 2: a gradient step overshoots above 1, diverges above 2

    @property
    def llc(self) -> float:
        """λ̂ = nβ (E_w[L_n(w)] − L_n(w*)), averaged over chains."""
        return float(self.nbeta * (self.draw_train_losses.mean() - self.train_loss_at_optimum))

    def step_summary(self) -> dict[str, float | None]:
        """The draws' step size (below the section's after a divergence) and its stability check, for JSON (which
        has no NaN: None where the curvature could not be taken)."""

        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"epsilon": self.epsilon, "curvature": finite(self.curvature), "stability": finite(self.stability)}

    @property
    def llc_per_chain(self) -> np.ndarray:
        return self.nbeta * (self.draw_train_losses.mean(axis=1) - self.train_loss_at_optimum)


class Diverged(KernelscopeError):
    """A chain's minibatch loss or a probe loss became non-finite; ``where`` says at which step and chain."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


def sample(
    model: nn.Module,
    loss_fn: PerSampleLoss,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_probe: torch.Tensor,
    y_probe: torch.Tensor,
    config: SGLDConfig,
    progress: bool = False,
    eval_batch: int = 1024,
) -> SGLDResult:
    """Run ``config.chains`` vectorized SGLD chains from w*; evaluate the probe losses at every draw.

    A divergence with retries left restarts every chain from w* with the same seed at half the step size (a
    model trained on another CPU can be sharper than the one the default was chosen on); the draws' step size
    is ``result.epsilon`` and each restart is a health warning. Without retries left it raises ``Diverged``.
    With ``config.threads`` set, torch runs on that many threads meanwhile (the threads runner gives a task one).
    """
    attempt = config
    lowered: list[str] = []
    while True:
        try:
            with fixed_threads(config.threads):
                result = _sample_at(model, loss_fn, x_train, y_train, x_probe, y_probe, attempt, progress, eval_batch)
        except Diverged as error:
            lowered.append(f"{attempt.epsilon:g} ({error.where})")
            if len(lowered) > config.retries:
                if len(lowered) == 1:
                    raise
                raise Diverged(
                    f"SGLD diverged at {config.section}.epsilon = {', then '.join(lowered)}; "
                    f"lower {config.section}.epsilon (now {config.epsilon:g}) "
                    f"or raise {config.section}.gamma (now {config.gamma:g}).",
                    error.where,
                ) from error
            attempt = replace(attempt, epsilon=attempt.epsilon / 2)
            continue
        if lowered:
            result.warnings.insert(
                0,
                f"the chains diverged at {config.section}.epsilon = {', then '.join(lowered)}; the draws are at "
                f"epsilon {attempt.epsilon:g}: set {config.section}.epsilon to that to skip the restarts.",
            )
        return result


def _sample_at(
    model: nn.Module,
    loss_fn: PerSampleLoss,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_probe: torch.Tensor,
    y_probe: torch.Tensor,
    config: SGLDConfig,
    progress: bool,
    eval_batch: int,
) -> SGLDResult:
    model.eval()  # per-sample losses without dropout noise and with frozen batch-norm statistics
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    w_star = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    c = config.chains
    nbeta = config.resolved_nbeta()
    gen = torch.Generator().manual_seed(config.seed)
    n = len(x_train)
    m = min(config.batch_size, n)

    def batch_loss(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (params, frozen, buffers), (xb,)), yb).mean()

    def per_sample(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (params, frozen, buffers), (xb,)), yb)

    # chains × their own minibatches (vectorized: 7x per chain); the loss comes from the gradient's own forward
    grad_all = vmap(grad_and_value(batch_loss), in_dims=(0, 0, 0))
    losses_all = vmap(per_sample, in_dims=(0, None, None))  # chains × one small shared batch

    def probe_losses(params: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        # One plain call per chain: on CPU a vmap over stacked weights turns each matmul into a
        # batched one and measured about 2x slower here (benchmarks/loss_kernel_bench.py).
        return torch.stack(
            [
                torch.cat(
                    [
                        per_sample({k: v[c] for k, v in params.items()}, xs[i : i + eval_batch], ys[i : i + eval_batch])
                        for i in range(0, len(xs), eval_batch)
                    ]
                )
                for c in range(next(iter(params.values())).shape[0])
            ]
        )  # (chains, n_probe)

    with torch.no_grad():
        at_opt = torch.cat(
            [
                per_sample(w_star, x_probe[i : i + eval_batch], y_probe[i : i + eval_batch])
                for i in range(0, len(x_probe), eval_batch)
            ]
        )
        eval_idx = torch.randperm(n, generator=gen)[: min(n, eval_batch)]
        train_at_opt = float(per_sample(w_star, x_train[eval_idx], y_train[eval_idx]).mean())

    w = {k: v.unsqueeze(0).repeat(c, *([1] * v.dim())) for k, v in w_star.items()}  # (chains, *shape)
    total = config.burn_in + config.draws * config.steps_between
    trace = np.empty((c, total))
    draws, draw_train = [], []
    with Progress(total, f"SGLD ({c} chains)", "step", bar=progress) as bar:
        for step in range(total):
            idx = torch.stack([torch.randperm(n, generator=gen)[:m] for _ in range(c)])  # (chains, m)
            with torch.no_grad():
                g, batch_losses = grad_all(w, x_train[idx], y_train[idx])  # {name: (chains, *shape)}, (chains,)
                trace[:, step] = batch_losses.numpy()
            if not np.all(np.isfinite(trace[:, step])):
                where = f"step {step}, chain {int(np.argmin(np.isfinite(trace[:, step])))}"
                raise Diverged(
                    f"SGLD diverged ({where}: non-finite loss); "
                    f"lower {config.section}.epsilon (now {config.epsilon:g}) "
                    f"or raise {config.section}.gamma (now {config.gamma:g}).",
                    where,
                )
            with torch.no_grad():
                w = {
                    k: sgld_step(
                        w[k],
                        g[k],
                        w_star[k],
                        config.epsilon,
                        config.gamma,
                        nbeta,
                        torch.randn(w[k].shape, generator=gen, dtype=w[k].dtype),
                    )
                    for k in names
                }
            done = step + 1 - config.burn_in
            if done > 0 and done % config.steps_between == 0:
                with torch.no_grad():
                    draws.append(probe_losses(w, x_probe, y_probe).numpy())  # (chains, n_probe)
                    draw_train.append(losses_all(w, x_train[eval_idx], y_train[eval_idx]).mean(1).numpy())  # (chains,)
            bar.update()
    probe = np.stack(draws, axis=2).transpose(1, 0, 2)  # (n_probe, chains, draws)
    if not np.all(np.isfinite(probe)):
        raise Diverged(
            f"SGLD produced non-finite probe losses; lower {config.section}.epsilon (now {config.epsilon:g}) "
            f"or raise {config.section}.gamma (now {config.gamma:g}).",
            "a probe loss",
        )
    draw_train_losses = np.stack(draw_train, axis=1)
    result = SGLDResult(probe, at_opt.numpy(), trace, train_at_opt, draw_train_losses, nbeta, config.epsilon)
    last = {k: v[0] for k, v in w.items()}  # chain 0's last draw
    result.curvature = top_curvature(batch_loss, last, x_train[eval_idx[:m]], y_train[eval_idx[:m]], config.seed)
    result.stability = config.epsilon * (nbeta * result.curvature + config.gamma) / 2
    result.warnings.extend(health_warnings(result, config.section))
    return result
