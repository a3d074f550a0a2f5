"""The multitask sampler sweep: task separation and sampler health over ε × γ × nβ, for several training seeds.

One modular model per training seed (the multitask section's recipe), one SGLD run per grid cell of
``loss_kernel_sweep`` around it (the rest of the sampler from the multitask section). A cell is robust when its
task-separation AUC reaches ``robust_auc`` with no health warning; the report gives, per seed and over all seeds,
the fraction of robust cells, and the AUC and verdict of the multitask section's own setting (the default).

Layout under the sweep root: ``seed<s>/model`` (the checkpoint), ``seed<s>/cells/<cell>.json`` (one cell's
summary), ``sweep.json`` and ``heatmap_seed<s>.png`` (the report).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.core.params import Params
from kernelscope.core.results import StageResult
from kernelscope.loss_kernel.multitask_stages import sample_multitask, separation_summary
from kernelscope.loss_kernel.sgld import Diverged


@dataclass(frozen=True)
class Cell:
    """One sampler setting of the grid."""

    epsilon: float
    gamma: float
    nbeta: float

    @property
    def name(self) -> str:
        return f"eps{self.epsilon:g}_gamma{self.gamma:g}_nbeta{self.nbeta:g}"


def grid(params: Params) -> list[Cell]:
    """Every cell of the sweep, nβ slowest and ε fastest (the heat maps' order)."""
    sp = params.loss_kernel_sweep
    return [Cell(e, g, b) for b, g, e in itertools.product(sp.nbeta, sp.gamma, sp.epsilon)]


def default_cell(params: Params) -> Cell | None:
    """The multitask section's own sampler setting, when it lies on the grid."""
    mp = params.multitask
    cell = Cell(mp.epsilon, mp.gamma, mp.nbeta) if mp.nbeta is not None else None
    return cell if cell in grid(params) else None


def seed_params(params: Params, seed: int) -> Params:
    """The run's params with another training seed (the model, its data split, probes and sampler seed)."""
    return params.model_copy(update={"seed": seed})


def cell_params(params: Params, seed: int, cell: Cell) -> Params:
    """The params of one cell: the training seed, the cell's ε, γ, nβ in the multitask section, no UMAP, and no
    restart at a lower ε on divergence (a diverging cell is the cell's result)."""
    multitask = params.multitask.model_copy(
        update={
            "epsilon": cell.epsilon,
            "gamma": cell.gamma,
            "nbeta": cell.nbeta,
            "umap": False,
            "divergence_retries": 0,
        }
    )
    return params.model_copy(update={"seed": seed, "multitask": multitask})


def sweep_cell_stage(params: Params, root: Path) -> StageResult:
    """SGLD at the multitask section's setting around the model under ``root``/model; the cell's summary JSON.

    A diverging setting is a result (AUC null, its message as the warning), not a failure: the sweep goes on.
    """
    mp = params.multitask
    cell = Cell(mp.epsilon, mp.gamma, float(mp.nbeta))
    try:
        data, probes, result, checkpoint_hash = sample_multitask(params, Path(root))
        summary = separation_summary(result, data.x[probes, 2])
    except Diverged as error:
        summary = {"task_auc": None, "task_auc_within_chain": None, "llc": None}  # JSON has no NaN
        summary["warnings"], checkpoint_hash = [str(error)], None
    summary = {**asdict(cell), "seed": params.seed, "checkpoint_hash": checkpoint_hash, **summary}
    summary["healthy"] = not summary["warnings"]
    path = Path(root) / "cells" / f"{cell.name}.json"
    write_json_artifact(path, summary, "loss-kernel-sweep-cell")
    return StageResult.of(summary, [path])


def sweep_report(params: Params, root: Path, cells: list[dict[str, Any]]) -> StageResult:
    """sweep.json and one heat map per seed from the cells' summaries (any order)."""
    from kernelscope.loss_kernel.plots import sweep_heatmaps

    sp = params.loss_kernel_sweep
    root = Path(root)
    shape = (len(sp.nbeta), len(sp.gamma), len(sp.epsilon))
    position = {cell: np.unravel_index(i, shape) for i, cell in enumerate(grid(params))}
    default = default_cell(params)
    per_seed, plots = {}, []
    for seed in sp.seeds:
        auc, healthy = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
        rows = [c for c in cells if c["seed"] == seed]
        for row in rows:
            at = position[Cell(row["epsilon"], row["gamma"], row["nbeta"])]
            auc[at] = np.nan if row["task_auc"] is None else row["task_auc"]
            healthy[at] = row["healthy"]
        robust = healthy & (np.nan_to_num(auc) >= sp.robust_auc)
        entry: dict[str, Any] = {"robust_fraction": float(robust.mean()), "cells": rows}
        if default is not None:
            value = auc[position[default]]
            entry["default_auc"] = None if np.isnan(value) else float(value)
            entry["default_healthy"] = bool(healthy[position[default]])
        per_seed[str(seed)] = entry
        title = f"multitask loss kernel, training seed {seed}: robust fraction {robust.mean():.2f}"
        plots.append(
            sweep_heatmaps(
                root / f"heatmap_seed{seed}.png", auc, healthy, sp.epsilon, sp.gamma, sp.nbeta, title, sp.robust_auc
            )
        )
    summary: dict[str, Any] = {
        "grid": {"epsilon": sp.epsilon, "gamma": sp.gamma, "nbeta": sp.nbeta},
        "robust_auc": sp.robust_auc,
        "robust_fraction": float(np.mean([s["robust_fraction"] for s in per_seed.values()])),
        "default": None if default is None else asdict(default),
        "seeds": per_seed,
    }
    if default is not None:
        aucs = [s["default_auc"] for s in per_seed.values()]
        summary["default_min_auc"] = None if None in aucs else float(min(aucs))
        summary["default_healthy_on_all_seeds"] = all(s["default_healthy"] for s in per_seed.values())
    write_json_artifact(root / "sweep.json", summary, "loss-kernel-sweep")
    summary["plots"], summary["path"] = [str(p) for p in plots], str(root / "sweep.json")
    return StageResult.of(summary, [root / "sweep.json", *plots])
