"""Singular-value spectra of layer Jacobians and effective-rank measures.

Rank is the coordinate-free quantity (MATH.md): J ↦ A J B⁻¹ for invertible A, B keeps it. The
mass-based effective rank and the participation ratio summarize the spectrum's shape; they are kept
by orthogonal changes of coordinates (permutations, rotations) but not by scalings, and the
coordinate check reports exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kernelscope.core.progress import Progress
from kernelscope.structure.layers import chunks, jacobians


def numerical_rank(singular_values: np.ndarray, rtol: float) -> int:
    """Singular values above rtol × the largest (0 for an all-zero spectrum)."""
    s = np.asarray(singular_values, dtype=np.float64)
    if s.size == 0 or s.max() <= 0:
        return 0
    return int((s > rtol * s.max()).sum())


def rank_to_mass(singular_values: np.ndarray, mass: float = 0.99) -> int:
    """Fewest singular values whose squares hold ``mass`` of the total squared mass."""
    sq = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1] ** 2
    total = sq.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(sq) / total, mass - 1e-12) + 1)


def participation_ratio(singular_values: np.ndarray) -> float:
    """(Σσ²)² / Σσ⁴: the number of equally strong directions with the same spread (0 if all zero)."""
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    denom = (sq**2).sum()
    return float(sq.sum() ** 2 / denom) if denom > 0 else 0.0


def stacked_gram(jac: np.ndarray) -> np.ndarray:
    """Σ_b J_bᵀ J_b for Jacobians (b, m, n): the Gram of their (b·m, n) stack
    (batched BLAS; np.einsum is ~10× slower)."""
    flat = jac.reshape(-1, jac.shape[2])
    return flat.T @ flat


def per_point_singular_values(jac: np.ndarray) -> np.ndarray:
    """Singular values of each J_b (b, m, n), descending. An SVD, not the Gram's eigenvalues: those
    square the condition number and blur every singular value below sqrt(eps)·σ_1 ≈ 1e-8·σ_1."""
    return np.linalg.svd(jac, compute_uv=False)


class StackedSpectrum:
    """Singular values of the Jacobians stacked over all points, (n·m, d) never held at once: the R of
    a QR factorization updated chunk by chunk (R of [R; J_chunk] has the stack's singular values)."""

    def __init__(self) -> None:
        self.r: np.ndarray | None = None

    def add(self, jac: np.ndarray) -> None:  # (b, m, d)
        flat = jac.reshape(-1, jac.shape[2])
        self.r = np.linalg.qr(flat if self.r is None else np.vstack([self.r, flat]), mode="r")

    def singular_values(self, d: int) -> np.ndarray:  # (d,), zero-padded when fewer rows than columns were stacked
        s = np.linalg.svd(self.r, compute_uv=False)
        return np.concatenate([s, np.zeros(d - len(s))])


def borderline(singular_values: np.ndarray, rtol: float, band: float) -> int:
    """Singular values within a factor ``band`` of the rank threshold (relative to the largest): the most
    a rank count can move when J becomes A J B⁻¹ with condition numbers κ(A)·κ(B) ≤ band
    (each σ_i/σ_1 moves by at most that factor)."""
    s = np.asarray(singular_values, dtype=np.float64)
    if s.size == 0 or s.max() <= 0:
        return 0
    rel = s / s.max()
    return int(((rel > rtol / band) & (rel <= rtol * band)).sum())


@dataclass
class PairSpectrum:
    """The Jacobian of layer ``target`` with respect to layer ``source`` at n points."""

    source: str
    target: str
    per_point: np.ndarray  # (n, min(d_t, d_s)) singular values per point, descending
    stacked: np.ndarray  # (d_s,) singular values of the (n·d_t, d_s) stack, descending
    shape: tuple[int, int]  # (d_t, d_s)
    summary: dict[str, float] = field(default_factory=dict)


def summarize(per_point: np.ndarray, stacked: np.ndarray, rtol: float, mass: float) -> dict[str, float]:
    ranks = np.array([numerical_rank(s, rtol) for s in per_point])
    return {
        "rank_per_point_mean": float(ranks.mean()),
        "rank_per_point_min": int(ranks.min()),
        "rank_per_point_max": int(ranks.max()),
        "rank_mass_per_point_mean": float(np.mean([rank_to_mass(s, mass) for s in per_point])),
        "participation_per_point_mean": float(np.mean([participation_ratio(s) for s in per_point])),
        "rank_stacked": numerical_rank(stacked, rtol),
        "rank_mass_stacked": rank_to_mass(stacked, mass),
        "participation_stacked": participation_ratio(stacked),
    }


def pair_spectrum(
    model: nn.Module,
    x: torch.Tensor,
    source: str,
    target: str,
    *,
    chunk_size: int,
    rtol: float,
    mass: float,
    progress: Progress | None = None,
) -> PairSpectrum:
    """Per-point and stacked spectra of ∂h_target/∂h_source over the points x, chunk by chunk."""
    per_point, stack, shape = [], StackedSpectrum(), (0, 0)
    for chunk in chunks(x, chunk_size):
        jac = jacobians(model, chunk, source, target).double().numpy()  # (b, d_t, d_s)
        shape = (jac.shape[1], jac.shape[2])
        per_point.append(per_point_singular_values(jac))
        stack.add(jac)
        if progress is not None:
            progress.update(len(chunk))
    per = np.concatenate(per_point)
    stacked = stack.singular_values(shape[1])
    return PairSpectrum(source, target, per, stacked, shape, summarize(per, stacked, rtol, mass))


def layer_spectra(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[str],
    *,
    chunk_size: int,
    rtol: float,
    mass: float,
    progress: bool = False,
) -> list[PairSpectrum]:
    """Spectra of every adjacent pair (layers[i] → layers[i+1])."""
    pairs = list(zip(layers[:-1], layers[1:]))
    bar = Progress(total=len(pairs) * len(x), desc="layer Jacobians", unit="pt", bar=progress)
    with bar:
        return [
            pair_spectrum(model, x, s, t, chunk_size=chunk_size, rtol=rtol, mass=mass, progress=bar) for s, t in pairs
        ]
