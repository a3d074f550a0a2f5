"""Random projections of per-sample, per-class gradients to K dimensions, from layer factors.

Two families, both with E[PᵀP] = I after the 1/sqrt(K) scale, so ⟨Pg, Pg'⟩ estimates ⟨g, g'⟩:

- ``kron_hadamard`` (default, fast): per layer, a subsampled randomized Hadamard transform with
  Kronecker structure. For g = Σ_t δ_t a_tᵀ, (H D_out ⊗ H D_in) vec(g) = vec(Σ_t (H D_out δ_t)(H D_in a_t)ᵀ),
  so each output coordinate k is Σ_t (H D_out δ_t)_{i_k} (H D_in a_t)_{j_k} for a seeded set of
  index pairs (i_k, j_k) drawn without replacement. Cost per sample and layer: two fast
  Walsh–Hadamard transforms and K products per class per position. A layer shared over many
  positions (a convolution) instead forms g in one batched product and transforms it,
  H D_out g D_in H, whichever is cheaper by a cost model measured on 2 cores (the same numbers).
- ``gaussian`` / ``rademacher`` (dense): P_l with i.i.d. entries, applied as Σ_t δ_tᵀ P_l[k] a_t
  (or to the formed g of a convolution), generated in seeded blocks of rows so the whole P is
  never held unless it fits the budget.

Every random quantity is a function of (seed, layer index, block index) only, and every
operation is per sample, so the features of a sample do not depend on which samples share
its batch. Layer projections are summed into one K-vector, as P g = Σ_l P_l g_l.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from kernelscope.kernels.layers import Dense, Factor, Outer

PROJECTIONS = ("kron_hadamard", "gaussian", "rademacher")
_BLOCK_ROWS = 512  # rows of a dense P_l generated at once
_CACHE_BLOCK = 128  # output coordinates accumulated over all layers at a time (fits in cache)
_TRANSFORM_ELEMENTS = 1 << 23  # elements of one materialized, transformed gradient batch (32 MB in float32)
_HADAMARD_BITS = 6  # Hadamard factors of at most 64 × 64 in fwht
# Costs of the two ways to project a shared layer (ns per operation, 2 cores, float32): a gathered product, a
# multiply-add inside a batched matrix product, one element through one Hadamard factor's matrix product.
_GATHER_NS, _MATMUL_NS, _TRANSFORM_NS = 16.0, 0.025, 5.0


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=32)
def sylvester_hadamard(n: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """The n × n Hadamard matrix in Sylvester order (n a power of two), entries ±1."""
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized Walsh–Hadamard transform along the last dim (a power of two), Sylvester order.

    H_{ab} = H_a ⊗ H_b, so with the last dim viewed as axes (a, b, ...) of at most 2^_HADAMARD_BITS each, the
    transform is one small matrix product along each axis: a few more multiply-adds per element than the butterfly,
    but in BLAS and without a temporary per stage (4× faster on a (64, 10, 64, 1024) batch on 2 cores).
    """
    n = x.shape[-1]
    bits = n.bit_length() - 1
    sizes = [1 << min(_HADAMARD_BITS, bits - done) for done in range(0, bits, _HADAMARD_BITS)]
    y = x.reshape(-1, *sizes)
    for axis, size in enumerate(sizes, start=1):
        h = sylvester_hadamard(size, x.dtype, x.device)  # symmetric
        y = torch.movedim(torch.movedim(y, axis, -1) @ h, -1, axis)
    return y.reshape(x.shape)


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
            if f.shared and _hadamard_materializes(f, self.dim):
                out += self._hadamard_of_gradient(layer, f)
                continue
            hd, ha, rows, cols = self._hadamard_factors(layer, f)
            if not f.shared:
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

    def _hadamard_of_gradient(self, layer: int, f: Outer) -> torch.Tensor:
        """(b, C, K) coordinates of (H D_out ⊗ H D_in) vec(g) from the materialized gradient g = Σ_t δ_t a_tᵀ:
        the same numbers as the position-by-position sum, for a weight shared over many positions."""
        b, c, _, d_out = f.delta.shape
        s_out, s_in, rows, cols = self._hadamard_plan(layer, d_out, f.act.shape[2], f.act.device, f.act.dtype)
        po, pi = s_out.numel(), s_in.numel()
        picked = rows * pi + cols  # coordinate k of the transformed (po, pi) gradient
        out = torch.empty(b, c, self.dim, dtype=f.act.dtype, device=f.act.device)
        step = max(1, _TRANSFORM_ELEMENTS // (c * po * pi))  # samples per transform, bounding its temporaries
        for s in range(0, b, step):
            g = torch.einsum("bcto,bti->bcoi", f.delta[s : s + step], f.act[s : s + step])  # (b', C, d_out, d_in)
            g = fwht(_pad_last(g, pi) * s_in)  # g D_in H: (b', C, d_out, pi)
            g = fwht(_pad_last(g.transpose(2, 3), po) * s_out)  # (H D_out g D_in H)ᵀ: (b', C, pi, po)
            out[s : s + step] = g.transpose(2, 3).reshape(len(g), c, po * pi)[:, :, picked]
        return out

    def _add_dense(self, layer: int, f: Factor, out: torch.Tensor) -> None:
        starts = range(0, self.dim, _BLOCK_ROWS)
        if isinstance(f, Outer) and f.shared and _dense_materializes(f, self.dim):
            f = Dense(f.name, f.materialize())  # (b, C, d_out·d_in): the same product, far fewer operations
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


def _hadamard_materializes(f: Outer, k: int) -> bool:
    """Whether forming g = Σ_t δ_t a_tᵀ (one batched matrix product) and transforming it (a small matrix product per
    Hadamard factor of each axis) beats summing K gathered products over the T positions. Per class, in nanoseconds
    per operation measured on 2 cores (a ResNet's 64 × 576 layer at T = 64: 0.5 s against 1.3 s per 64 samples)."""
    _, _, t, d_out = f.delta.shape
    d_in = f.act.shape[2]
    po, pi = next_pow2(d_out), next_pow2(d_in)
    factors = sum(-(-(n.bit_length() - 1) // _HADAMARD_BITS) for n in (po, pi))
    gathered = _GATHER_NS * t * k
    formed = _MATMUL_NS * t * d_out * d_in + _TRANSFORM_NS * po * pi * factors
    return formed < gathered


def _dense_materializes(f: Outer, k: int) -> bool:
    """Whether g @ P_lᵀ (C·K·d_out·d_in, after forming g) beats Σ_t δ_tᵀ P_l a_t (T·K·d_in·d_out + C·T·K·d_out)."""
    _, c, t, d_out = f.delta.shape
    d_in = f.act.shape[2]
    return c * (t + k) * d_out * d_in < t * k * (d_in * d_out + c * d_out)


def _block_sizes(k: int) -> list[int]:
    return [min(_BLOCK_ROWS, k - s) for s in range(0, k, _BLOCK_ROWS)]


def _pad_last(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[-1] == n:
        return x
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))
