"""Random projections of per-sample, per-class gradients to K dimensions, from layer factors.

Two families, both with E[PᵀP] = I after the 1/sqrt(K) scale, so ⟨Pg, Pg'⟩ estimates ⟨g, g'⟩:

- ``kron_hadamard`` (default, fast): per layer, a subsampled randomized Hadamard transform with
  Kronecker structure. For g = Σ_t δ_t a_tᵀ, (H D_out ⊗ H D_in) vec(g) = vec(Σ_t (H D_out δ_t)(H D_in a_t)ᵀ),
  so each output coordinate k is Σ_t (H D_out δ_t)_{i_k} (H D_in a_t)_{j_k} for a seeded set of
  index pairs (i_k, j_k) drawn without replacement. Cost per sample and layer: two fast
  Walsh–Hadamard transforms and K products per class; the gradient itself is never formed.
- ``gaussian`` / ``rademacher`` (dense): P_l with i.i.d. entries, applied as Σ_t δ_tᵀ P_l[k] a_t,
  generated in seeded blocks of rows so the whole P is never held unless it fits the budget.

Every random quantity is a function of (seed, layer index, block index) only, and every
operation is per sample, so the features of a sample do not depend on which samples share
its batch. Layer projections are summed into one K-vector, as P g = Σ_l P_l g_l.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kernelscope.kernels.layers import Dense, Factor, Outer

PROJECTIONS = ("kron_hadamard", "gaussian", "rademacher")
_BLOCK_ROWS = 512  # rows of a dense P_l generated at once
_CACHE_BLOCK = 128  # output coordinates accumulated over all layers at a time (fits in cache)


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized Walsh–Hadamard transform along the last dim (a power of two), Sylvester order."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        x = torch.stack((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), dim=-2).reshape(*lead, n)
        h *= 2
    return x


def _generator(seed: int, *stream: int) -> torch.Generator:
    # One independent, reproducible stream per (seed, layer, block).
    mixed = seed
    for s in stream:
        mixed = (mixed * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def _signs(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1


def _stratified_indices(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k indices in [0, n): without replacement, cycling through fresh permutations when k > n."""
    rounds = -(-k // n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(rounds)])[:k]


@dataclass
class Projector:
    """Seeded projection of layer factors to (b, C, K) features."""

    dim: int
    seed: int = 0
    kind: str = "kron_hadamard"
    memory_budget_mb: int = 2048
    _plans: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in PROJECTIONS:
            raise ValueError(f"projection {self.kind!r} is unknown; choose one of {PROJECTIONS}")
        if self.dim < 1:
            raise ValueError("projection_dim must be at least 1")

    # -- plans: the random quantities of one layer, made once and reused for every batch --
    def _hadamard_plan(self, layer: int, d_out: int, d_in: int, device: torch.device, dtype: torch.dtype) -> tuple:
        key = ("h", layer, d_out, d_in)
        if key not in self._plans:
            gen = _generator(self.seed, layer)
            po, pi = next_pow2(d_out), next_pow2(d_in)
            s_out, s_in = _signs(po, gen), _signs(pi, gen)
            pairs = _stratified_indices(po * pi, self.dim, gen)
            self._plans[key] = (
                s_out.to(device, dtype),
                s_in.to(device, dtype),
                (pairs // pi).to(device),
                (pairs % pi).to(device),
            )
        return self._plans[key]

    def _dense_block(
        self, layer: int, block: int, rows: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        key = ("d", layer, block, width)
        if key in self._plans:
            return self._plans[key]
        gen = _generator(self.seed, layer, block)
        if self.kind == "gaussian":
            p = torch.randn(rows, width, generator=gen, dtype=torch.float64)
        else:
            p = torch.randint(0, 2, (rows, width), generator=gen).to(torch.float64) * 2 - 1
        p = p.to(device, dtype)
        cached = sum(v.numel() * v.element_size() for k, v in self._plans.items() if k[0] == "d")
        if cached + p.numel() * p.element_size() <= self.memory_budget_mb * 2**20:
            self._plans[key] = p  # generated once and reused across batches while it fits
        return p

    # -- projection --
    def project(self, factors: list[Factor]) -> torch.Tensor:
        """(b, C, K) projected per-class gradients, scaled by 1/sqrt(K)."""
        first = factors[0]
        ref = first.delta if isinstance(first, Outer) else first.grad
        out = torch.zeros(ref.shape[0], ref.shape[1], self.dim, dtype=ref.dtype, device=ref.device)
        if self.kind != "kron_hadamard":
            for layer, f in enumerate(factors):
                self._add_dense(layer, f, out)
            return out.div_(math.sqrt(self.dim))
        unshared = []  # (H D δ (b, C, po), (H D a)[:, cols] (b, K), rows) of layers without weight sharing
        for layer, f in enumerate(factors):
            if isinstance(f, Dense):  # a vector per class: δ = g with a scalar activation 1
                f = Outer(
                    f.name,
                    torch.ones(f.grad.shape[0], 1, 1, dtype=f.grad.dtype, device=f.grad.device),
                    f.grad.unsqueeze(2),
                )
            hd, ha, rows, cols = self._hadamard_factors(layer, f)
            if f.act.shape[1] == 1:
                unshared.append((hd[:, :, 0], torch.index_select(ha[:, 0], 1, cols), rows))
                continue
            for start in range(0, self.dim, _BLOCK_ROWS):  # Σ_t over shared positions, K in blocks
                r, q = rows[start : start + _BLOCK_ROWS], cols[start : start + _BLOCK_ROWS]
                out[:, :, start : start + len(r)] += (
                    torch.index_select(hd, 3, r) * torch.index_select(ha, 2, q).unsqueeze(1)
                ).sum(2)
        # Memory-bound: accumulate every layer into one cache-sized block of K before moving on.
        for start in range(0, self.dim, _CACHE_BLOCK):
            block = out[:, :, start : start + _CACHE_BLOCK]
            for hd, ha_cols, rows in unshared:
                block.addcmul_(
                    torch.index_select(hd, 2, rows[start : start + _CACHE_BLOCK]),
                    ha_cols[:, None, start : start + _CACHE_BLOCK],
                )
        return out.div_(math.sqrt(self.dim))

    def _hadamard_factors(self, layer: int, f: Outer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        d_out, d_in = f.delta.shape[3], f.act.shape[2]
        s_out, s_in, rows, cols = self._hadamard_plan(layer, d_out, d_in, f.act.device, f.act.dtype)
        hd = fwht(_pad_last(f.delta, s_out.numel()) * s_out)  # (b, C, T, po)
        ha = fwht(_pad_last(f.act, s_in.numel()) * s_in)  # (b, T, pi)
        return hd, ha, rows, cols

    def _add_dense(self, layer: int, f: Factor, out: torch.Tensor) -> None:
        starts = range(0, self.dim, _BLOCK_ROWS)
        if isinstance(f, Dense):
            p = f.grad.shape[2]
            for i, (start, n) in enumerate(zip(starts, _block_sizes(self.dim))):
                out[:, :, start : start + n] += (
                    f.grad @ self._dense_block(layer, i, n, p, f.grad.device, f.grad.dtype).T
                )
            return
        b, c, t, d_out = f.delta.shape
        d_in = f.act.shape[2]
        for i, (start, n) in enumerate(zip(starts, _block_sizes(self.dim))):
            p = self._dense_block(layer, i, n, d_out * d_in, f.act.device, f.act.dtype).reshape(n, d_out, d_in)
            m = torch.einsum("koi,bti->btko", p, f.act)  # P_l[k] a_t: (b, T, n, d_out), shared by classes
            out[:, :, start : start + n] += torch.einsum("bcto,btko->bck", f.delta, m)


def _block_sizes(k: int) -> list[int]:
    return [min(_BLOCK_ROWS, k - s) for s in range(0, k, _BLOCK_ROWS)]


def _pad_last(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[-1] == n:
        return x
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))
