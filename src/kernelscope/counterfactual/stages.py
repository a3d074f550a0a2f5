"""The counterfactual stage: retrain on subsets, score every attributor, and write the LDS table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernelscope import __version__
from kernelscope.core.errors import ParamsError
from kernelscope.core.fileio import write_dvc_metrics
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params, params_hash
from kernelscope.core.provenance import run_model
from kernelscope.core.results import StageResult
from kernelscope.core.tables import markdown_table, write_table_files
from kernelscope.counterfactual.attributors import Run, Scores, attribute
from kernelscope.counterfactual.datamodels import datamodels
from kernelscope.counterfactual.lds import bootstrap_mean, lds_per_query
from kernelscope.counterfactual.plots import lds_against_cost, lds_bars
from kernelscope.kernels.store import write_kernel

SCORES_ARTIFACT = "attribution-scores"
LDS_HEADER = ("attributor", "lds", "ci_low", "ci_high", "seconds")


def check_attributors(params: Params) -> None:
    """A kernel attributor needs its kernel computed by the run (kernel.kinds)."""
    for name in params.counterfactual.attributors:
        family, _, kind = name.partition(":")
        if kind and kind not in params.kernel.kinds:
            raise ParamsError(
                f"counterfactual.attributors: {name!r} needs the {kind} kernel, which kernel.kinds does not compute; "
                f"add {kind} to kernel.kinds or drop {name}."
            )


def scores_path(layout: RunLayout, name: str) -> Path:
    return layout.counterfactual_dir / "scores" / f"{name.replace(':', '-')}.parquet"


def write_scores(layout: RunLayout, run: Run, scores: Scores) -> Path:
    ds = run.dataset
    path = scores_path(layout, scores.name)
    provenance = {
        "attributor": scores.name,
        "sign": "positive: training on x_j raises f(x) = log(p_y / (1 - p_y))",
        "counterfactual": run.params.counterfactual.model_dump(mode="json"),
        "checkpoint_hash": run.checkpoint.checkpoint_hash,
        "dataset_hash": ds.dataset_hash,
        "seconds": scores.seconds,
        "peak_mb": scores.peak_mb,
    }
    write_kernel(path, scores.values, ds.test.ids, ds.train.ids, provenance, artifact=SCORES_ARTIFACT)
    return path


def counterfactual_stage(params: Params, layout: RunLayout, progress: bool = False) -> StageResult:
    """LDS of every attributor against models retrained on counterfactual.m subsets (Park et al. 2023)."""
    check_attributors(params)
    cf = params.counterfactual
    ds, ckpt = run_model(params, layout)
    out = layout.counterfactual_dir
    truth = datamodels(params, ds, out / "retrain", progress=progress)
    run = Run(params, layout, ds, ckpt)
    rows, written = [], list(truth.paths)
    for name in cf.attributors:
        scores = attribute(run, name)
        written.append(write_scores(layout, run, scores))
        per_query = lds_per_query(scores.values, truth.masks, truth.outputs)
        ci = bootstrap_mean(per_query, params.seed, cf.bootstrap)
        rows.append(
            {
                "attributor": name,
                "lds": ci.mean,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "seconds": scores.seconds,
                "peak_mb": scores.peak_mb,
                "test_points": ci.n,
            }
        )
    rows.sort(key=lambda r: -np.nan_to_num(r["lds"], nan=-2.0))
    cells = [
        [r["attributor"], *(f"{r[k]:.4f}" for k in ("lds", "ci_low", "ci_high")), f"{r['seconds']:.2f}"] for r in rows
    ]
    title = f"{ds.name}: LDS over m = {cf.m} subsets of α = {cf.alpha}"
    written += write_table_files(
        out, "lds", markdown=markdown_table(LDS_HEADER, cells, title=title), csv=(LDS_HEADER, cells)
    )
    names = [r["attributor"] for r in rows]
    array = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in ("lds", "ci_low", "ci_high", "seconds")}
    written.append(lds_bars(out / "lds.png", names, array["lds"], array["ci_low"], array["ci_high"], title))
    written.append(lds_against_cost(out / "lds_vs_cost.png", names, array["lds"], array["seconds"], title))
    summary: dict[str, Any] = {
        "dataset": ds.name,
        "m": cf.m,
        "alpha": cf.alpha,
        "lds": rows,
        "best": rows[0]["attributor"],
        "checkpoint_hash": ckpt.checkpoint_hash,
        "params_hash": params_hash(params),
        "version": __version__,
    }
    written.append(write_dvc_metrics(out / "metrics.json", summary))
    return StageResult.of(summary, written)
