"""The multitask validation of the loss kernel: modular addition and division in one model.

Data: every pair (a, b) with a, b in [0, p) for addition (a + b mod p) and b ≠ 0 for division
(a · b⁻¹ mod p), with a task token; a seeded split. Model: embeddings of a, b and the task,
concatenated, one hidden ReLU layer, p logits. Task separation (MATH.md): each probe point's
vector of loss changes over draws, v_i = (ℓ(z_i; w_d) − ℓ(z_i; w*))_d, normalized to unit length,
projected on the first principal component; the ROC-AUC of that coordinate for the task label
(max(AUC, 1 − AUC), since a component's sign is arbitrary).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.core.progress import Progress
from kernelscope.models.zoo import model_construction

ADD, DIV = 0, 1


@dataclass(frozen=True)
class MultitaskData:
    x: np.ndarray  # (n, 3) int64: a, b, task
    y: np.ndarray  # (n,) int64
    train: np.ndarray  # indices of the training split
    test: np.ndarray
    p: int


def make_multitask_data(p: int = 97, train_fraction: float = 0.5, seed: int = 0) -> MultitaskData:
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    add = np.stack([a, b, np.full_like(a, ADD)], axis=1)
    keep = b != 0
    inverse = np.array([pow(int(v), -1, p) if v else 0 for v in range(p)])
    div = np.stack([a[keep], b[keep], np.full(keep.sum(), DIV)], axis=1)
    x = np.concatenate([add, div]).astype(np.int64)
    y = np.concatenate([(a + b) % p, (a[keep] * inverse[b[keep]]) % p]).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(train_fraction * len(x)))
    return MultitaskData(x, y, np.sort(order[:cut]), np.sort(order[cut:]), p)


class MultitaskMLP(nn.Module):
    def __init__(self, p: int, embed: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.a = nn.Embedding(p, embed)
        self.b = nn.Embedding(p, embed)
        self.task = nn.Embedding(2, embed)
        self.embed = nn.Identity()  # names the concatenated embedding as a layer (structure probes); no parameters
        self.hidden = nn.Linear(3 * embed, hidden)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden, p)

    # Layers the structure probes read, in forward order (the integer input is not differentiable).
    structure_layers = ("embed", "act", "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, 3) int64 -> (b, p)
        h = self.embed(torch.cat([self.a(x[:, 0]), self.b(x[:, 1]), self.task(x[:, 2])], dim=1))  # (b, 3·embed)
        return self.out(self.act(self.hidden(h)))


class MultitaskTransformer(nn.Module):
    """One transformer layer without layer norm on the tokens [a, b, task] (task tokens p and p + 1):
    learned positions, multi-head attention read out at the last position, a ReLU MLP, both with
    residual connections, and an unembedding to p logits. Embeddings start at std 1/sqrt(d), which
    lets the model grok both tasks (with N(0, 1) it had not generalized after 20,000 steps)."""

    def __init__(self, p: int, d: int = 128, heads: int = 4, mlp: int = 512) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"multitask.embed ({d}) must be a multiple of multitask.heads ({heads})")
        self.p, self.d, self.heads = p, d, heads
        self.embed = nn.Embedding(p + 2, d)
        self.pos = nn.Parameter(torch.randn(3, d) / math.sqrt(d))
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.resid_mid = nn.Identity()  # names the residual stream after attention (structure probes); no parameters
        self.fc1 = nn.Linear(d, mlp)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(mlp, d)
        self.unembed = nn.Linear(d, p, bias=False)
        if not self.embed.weight.is_meta:  # values only; on meta (counting parameters) init imports torch._dynamo
            nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d))

    structure_layers = ("resid_mid", "act", "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, 3) int64 -> (b, p)
        # Position j only ever holds one of p + 2 tokens, so keys and values are computed once per
        # (position, token) and looked up: the same function as projecting every row, a fraction of the cost.
        # F.embedding, not fancy indexing: its backward is deterministic on CPU (index_put's accumulate is not).
        b, hd = x.shape[0], self.d // self.heads
        table = self.embed.weight[None] + self.pos[:, None]  # (3, p + 2, d): every token at every position
        keys, values = self.k(table), self.v(table)  # (3, p + 2, d)
        tokens = (x[:, 0], x[:, 1], x[:, 2] + self.p)
        k = torch.stack([F.embedding(t, keys[j]) for j, t in enumerate(tokens)], 1)  # (b, 3, d)
        v = torch.stack([F.embedding(t, values[j]) for j, t in enumerate(tokens)], 1)
        k = k.view(b, 3, self.heads, hd).transpose(1, 2)  # (b, h, 3, hd)
        v = v.view(b, 3, self.heads, hd).transpose(1, 2)
        last = table[2, self.p :]  # (2, d): the two task tokens at the last position
        q = F.embedding(x[:, 2], self.q(last)).view(b, self.heads, 1, hd)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1)  # (b, h, 1, 3)
        res = self.resid_mid(F.embedding(x[:, 2], last) + self.o((attention @ v).reshape(b, self.d)))  # (b, d)
        return self.unembed(res + self.fc2(self.act(self.fc1(res))))


def build_multitask_model(arch: str, p: int, embed: int, hidden: int, heads: int) -> nn.Module:
    return MultitaskTransformer(p, embed, heads, hidden) if arch == "transformer" else MultitaskMLP(p, embed, hidden)


class GrokfastEMA:
    """Grokfast's low-pass gradient filter (Lee et al. 2024, arXiv 2405.20233, Algorithm 2): an exponential
    moving average h ← α h + (1 − α) g of each gradient, added back amplified, g ← g + λ h, before the
    optimizer step. The slow component of the gradient is the one that drives generalization."""

    def __init__(self, parameters: list[nn.Parameter], alpha: float, lamb: float) -> None:
        self.parameters, self.alpha, self.lamb = parameters, alpha, lamb
        self.average: list[torch.Tensor] | None = None

    @torch.no_grad()
    def filter(self) -> None:
        grads = [p.grad for p in self.parameters]
        if self.average is None:
            self.average = [g.clone() for g in grads]
        else:
            for h, g in zip(self.average, grads):
                h.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
        for h, g in zip(self.average, grads):
            g.add_(h, alpha=self.lamb)


def learning_rate(step: int, steps: int, lr: float, decay_fraction: float) -> float:
    """Constant, then linear to zero over the last ``decay_fraction`` of the steps (warmup-stable-decay
    without warmup): the last steps settle the grokked solution instead of oscillating around it."""
    decay_steps = int(round(decay_fraction * steps))
    if decay_steps == 0 or step < steps - decay_steps:
        return lr
    return lr * (steps - step) / decay_steps


GROKKED = 0.99  # test accuracy on both tasks that counts as grokked


@dataclass(frozen=True)
class TrainingCurve:
    """Accuracies every ``eval_every`` steps; seconds are wall-clock and vary from run to run."""

    steps: list[int]
    seconds: list[float]
    train_loss: list[float]  # the minibatch loss at that step
    accuracies: list[dict[str, float]]  # accuracies() at that step

    def steps_to_grok(self) -> int | None:
        """The first evaluated step with test accuracy ≥ GROKKED on both tasks."""
        for step, acc in zip(self.steps, self.accuracies):
            if acc["test_add"] >= GROKKED and acc["test_div"] >= GROKKED:
                return step
        return None

    def seconds_to_grok(self) -> float | None:
        step = self.steps_to_grok()
        return None if step is None else self.seconds[self.steps.index(step)]


def train_multitask(
    data: MultitaskData,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    embed: int = 128,
    hidden: int = 512,
    arch: str = "mlp",
    heads: int = 4,
    grokfast_alpha: float = 0.98,
    grokfast_lamb: float = 0.0,
    decay_fraction: float = 0.0,
    eval_every: int = 0,
    settle_steps: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, float], TrainingCurve]:
    """AdamW with weight decay (the model memorizes, then generalizes: grokking), the Grokfast filter when
    ``grokfast_lamb`` > 0, and a linear decay of the learning rate over the last ``decay_fraction`` of the
    steps. Every ``eval_every`` steps (0: never) the accuracies go into the returned curve. ``settle_steps``
    > 0 stops early: once an evaluation sees both tasks grokked, the learning rate falls linearly to 0 over
    this many more steps (never above the schedule) and training ends (``steps`` is the budget; same bytes)."""
    if settle_steps and not eval_every:
        raise ValueError("settle_steps needs eval_every > 0: grokking is seen only at an evaluation")
    gen = torch.Generator().manual_seed(seed)
    with model_construction(seed):
        model = build_multitask_model(arch, data.p, embed, hidden, heads)
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    grokfast = GrokfastEMA(parameters, grokfast_alpha, grokfast_lamb) if grokfast_lamb > 0 else None
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    train = torch.from_numpy(data.train)
    curve = TrainingCurve([], [], [], [])
    start = time.perf_counter()
    end, settle_from = steps, None  # the last step + 1, and where the settling decay began
    with Progress(steps, "multitask training", "step", bar=progress) as bar:
        for step in range(steps):
            if step == end:
                break
            rate = learning_rate(step, steps, lr, decay_fraction)
            if settle_from is not None:
                rate = min(rate, lr * (end - step) / (end - settle_from))
            for group in optimizer.param_groups:
                group["lr"] = rate
            idx = train[torch.randint(0, len(train), (batch_size,), generator=gen)]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if grokfast is not None:
                grokfast.filter()
            optimizer.step()
            bar.update()
            if eval_every and ((step + 1) % eval_every == 0 or step + 1 == end):
                curve.steps.append(step + 1)
                curve.seconds.append(time.perf_counter() - start)
                curve.train_loss.append(loss.item())
                curve.accuracies.append(accuracies(model, data))
                if settle_steps and settle_from is None and curve.steps_to_grok() is not None:
                    settle_from, end = step + 1, min(steps, step + 1 + settle_steps)
                    bar.shorten(end)
    model.eval()
    return model, accuracies(model, data), curve


@torch.no_grad()
def accuracies(model: nn.Module, data: MultitaskData) -> dict[str, float]:
    pred = model(torch.from_numpy(data.x)).argmax(1).numpy()
    right = pred == data.y
    task = data.x[:, 2]
    out = {}
    for split, idx in (("train", data.train), ("test", data.test)):
        for name, t in (("add", ADD), ("div", DIV)):
            sel = idx[task[idx] == t]
            out[f"{split}_{name}"] = float(right[sel].mean())
    return out


def task_separation(losses: np.ndarray, at_optimum: np.ndarray, task: np.ndarray) -> dict[str, float]:
    """ROC-AUC of the first principal component of the unit-normalized loss-change vectors."""
    from sklearn.metrics import roc_auc_score

    v = losses.reshape(losses.shape[0], -1) - at_optimum[:, None]  # (n_probe, chains · draws)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    v = v - v.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(v, full_matrices=False)
    pc1 = v @ vt[0]
    auc = float(roc_auc_score(task, pc1))
    return {
        "auc": max(auc, 1 - auc),
        "pc1_explained": float((np.linalg.svd(v, compute_uv=False) ** 2)[0] / (v**2).sum()),
    }


def task_contrast(corr: np.ndarray, task: np.ndarray, permutations: int = 200, seed: int = 0) -> dict[str, float]:
    """How much more the loss correlation R (probes × probes) is within a task than across: the mean off-diagonal
    R within each task, across tasks, their contrast (mean within − across), and the contrast's z-score against
    ``permutations`` seeded shufflings of the task labels. It averages over every pair, so it sees a block
    structure far weaker than the first principal component needs to stand out from the sampling noise."""

    def means(labels: np.ndarray) -> tuple[float, float, float]:
        onehot = np.stack([labels == ADD, labels == DIV], axis=1).astype(np.float64)  # (n_probe, 2)
        sums = onehot.T @ corr @ onehot  # (2, 2): sums of R over the pairs of each task pair
        sizes = onehot.sum(axis=0)
        diagonal = np.array([corr.diagonal()[labels == t].sum() for t in (ADD, DIV)])
        within = (np.diag(sums) - diagonal) / (sizes * (sizes - 1))  # off-diagonal pairs only
        return float(within[0]), float(within[1]), float(sums[0, 1] / (sizes[0] * sizes[1]))

    def contrast(labels: np.ndarray) -> float:
        add, div, across = means(labels)
        return (add + div) / 2 - across

    add, div, across = means(task)
    observed = contrast(task)
    rng = np.random.default_rng(seed)
    null = np.array([contrast(rng.permutation(task)) for _ in range(permutations)])
    spread = null.std()
    return {
        "within_add_corr": add,
        "within_div_corr": div,
        "across_corr": across,
        "task_contrast": observed,
        "task_contrast_z": float((observed - null.mean()) / spread) if spread > 0 else math.nan,
    }
