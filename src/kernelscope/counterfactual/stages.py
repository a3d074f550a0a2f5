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
from kernelscope.counterfactual.attributors import Run, attribute
from kernelscope.counterfactual.brittleness import (
    RANDOM,
)
from kernelscope.counterfactual.datamodels import datamodels, ensure_block
from kernelscope.counterfactual.lds import bootstrap_mean, bootstrap_statistic, lds_per_query
from kernelscope.counterfactual.mislabel import INSPECTED, found_fraction, noisy_run, roc_auc, self_scores
from kernelscope.counterfactual.plots import lds_against_cost, lds_bars, mislabel_curves
from kernelscope.kernels.store import read_kernel, write_kernel

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


def scores_provenance(params: Params, name: str, checkpoint_hash: str, dataset_hash: str) -> dict[str, Any]:
    """What a score file must record to be read back (its time and peak memory are recorded beside it)."""
    return {
        "attributor": name,
        "sign": "positive: training on x_j raises f(x) = log(p_y / (1 - p_y))",
        "counterfactual": params.counterfactual.model_dump(mode="json"),
        "checkpoint_hash": checkpoint_hash,
        "dataset_hash": dataset_hash,
    }


def read_scores(params: Params, layout: RunLayout, ds: Any, checkpoint_hash: str, name: str) -> tuple[np.ndarray, dict]:
    """An attributor's verified (test, train) scores as float64, and the file's metadata."""
    values, meta = read_kernel(
        scores_path(layout, name),
        expect=scores_provenance(params, name, checkpoint_hash, ds.dataset_hash),
        query_ids=ds.test.ids,
        artifact=SCORES_ARTIFACT,
    )
    return values.astype(np.float64), meta


def retrain_block_stage(params: Params, layout: RunLayout, block: int) -> StageResult:
    """One block of retrained models (counterfactual.models_per_stack of them), cached as a verified file."""
    from kernelscope.core.provenance import run_data

    ds = run_data(params, layout)
    path, masks, _ = ensure_block(params, ds, layout.counterfactual_dir / "retrain", block)
    return StageResult.of({"block": block, "models": int(len(masks)), "path": str(path)}, [path])


def attribute_stage(params: Params, layout: RunLayout, name: str) -> StageResult:
    """One attributor's (test, train) scores, written as a verified Parquet file with its time and peak memory."""
    check_attributors(params)
    ds, ckpt = run_model(params, layout)
    scores = attribute(Run(params, layout, ds, ckpt), name)
    path = scores_path(layout, name)
    provenance = {
        **scores_provenance(params, name, ckpt.checkpoint_hash, ds.dataset_hash),
        "seconds": scores.seconds,
        "peak_mb": scores.peak_mb,
    }
    write_kernel(path, scores.values, ds.test.ids, ds.train.ids, provenance, artifact=SCORES_ARTIFACT)
    return StageResult.of({"attributor": name, "seconds": scores.seconds, "peak_mb": scores.peak_mb}, [path])


def lds_stage(params: Params, layout: RunLayout) -> StageResult:
    """The LDS table and plots from the retrained blocks and every attributor's stored scores."""
    cf = params.counterfactual
    ds, ckpt = run_model(params, layout)
    out = layout.counterfactual_dir
    truth = datamodels(params, ds, out / "retrain")  # verified blocks (trained here only when missing)
    rows = []
    for name in cf.attributors:
        values, meta = read_scores(params, layout, ds, ckpt.checkpoint_hash, name)
        per_query = lds_per_query(values, truth.masks, truth.outputs)
        ci = bootstrap_mean(per_query, params.seed, cf.bootstrap)
        rows.append(
            {
                "attributor": name,
                "lds": ci.mean,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "seconds": float(meta["seconds"]),
                "peak_mb": float(meta["peak_mb"]),
                "test_points": ci.n,
            }
        )
    rows.sort(key=lambda r: -np.nan_to_num(r["lds"], nan=-2.0))
    cells = [
        [r["attributor"], *(f"{r[k]:.4f}" for k in ("lds", "ci_low", "ci_high")), f"{r['seconds']:.2f}"] for r in rows
    ]
    title = f"{ds.name}: LDS over m = {cf.m} subsets of α = {cf.alpha}"
    written = list(truth.paths)
    written += write_table_files(
        out,
        "lds",
        markdown=markdown_table(LDS_HEADER, cells, title=title),
        csv=(LDS_HEADER, cells),
        json_cells=(LDS_HEADER, cells),  # the report's table
    )
    names = [r["attributor"] for r in rows]
    array = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in ("lds", "ci_low", "ci_high", "seconds")}
    bars = lds_bars(out / "lds.png", names, array["lds"], array["ci_low"], array["ci_high"], title)
    cost = lds_against_cost(out / "lds_vs_cost.png", names, array["lds"], array["seconds"], title)
    written += [bars, cost]
    summary: dict[str, Any] = {
        "dataset": ds.name,
        "m": cf.m,
        "alpha": cf.alpha,
        "lds": rows,
        "best": rows[0]["attributor"],
        "lds_plot": str(bars),
        "cost_plot": str(cost),
        "checkpoint_hash": ckpt.checkpoint_hash,
        "version": __version__,
    }
    written.append(write_dvc_metrics(out / "metrics.json", summary))
    return StageResult.of(summary, written)


def mislabel_stage(params: Params, layout: RunLayout) -> StageResult:
    """ROC-AUC of each attributor's self-scores at finding the training labels flipped (a seeded
    counterfactual.mislabel_fraction of them) after retraining on them, and the fraction found in the top
    10% and 20%; bootstrap intervals over training points."""
    cf = params.counterfactual
    ds, ckpt = run_model(params, layout)
    noisy, flips = noisy_run(Run(params, layout, ds, ckpt), cf.mislabel_fraction)
    out = layout.counterfactual_dir
    rows, curves = [], {}
    for name in cf.attributors:
        scores = attribute(noisy, name)
        own = self_scores(scores.values)  # τ(x_j, x_j) (N,)
        ci = bootstrap_statistic(lambda rows_: roc_auc(own[rows_], flips[rows_]), len(flips), params.seed, cf.bootstrap)
        found = {f"found_top{round(100 * f)}": found_fraction(own, flips, f) for f in INSPECTED}
        rows.append(
            {
                "attributor": name,
                "auc": ci.mean,
                "ci_low": ci.low,
                "ci_high": ci.high,
                **found,
                "seconds": scores.seconds,
            }
        )
        curves[name] = own
    rows.sort(key=lambda r: -np.nan_to_num(r["auc"], nan=-1.0))
    header = ("attributor", "auc", "ci_low", "ci_high", *(f"found_top{round(100 * f)}" for f in INSPECTED), "seconds")
    cells = [[r["attributor"], *(f"{r[c]:.4f}" for c in header[1:-1]), f"{r['seconds']:.2f}"] for r in rows]
    title = (
        f"{ds.name}: flipped labels found by self-attribution ({int(flips.sum())} of {len(flips)} flipped, "
        f"seed {params.seed})"
    )
    written = write_table_files(
        out,
        "mislabel",
        markdown=markdown_table(header, cells, title=title),
        csv=(header, cells),
        json_cells=(header, cells),
    )
    written.append(mislabel_curves(out / "mislabel.png", curves, flips, title))
    summary = {"dataset": ds.name, "flipped": int(flips.sum()), "mislabel": rows}
    return StageResult.of(summary, written)


def counterfactual_stage(params: Params, layout: RunLayout, progress: bool = False) -> StageResult:
    """LDS of every attributor against models retrained on counterfactual.m subsets (Park et al. 2023): every
    block, every attributor, then the table (what the CLI and DVC run; the flow runs the parts as tasks)."""
    check_attributors(params)
    ds = run_model(params, layout)[0]
    datamodels(params, ds, layout.counterfactual_dir / "retrain", progress=progress)
    parts = [attribute_stage(params, layout, name) for name in params.counterfactual.attributors]
    table = lds_stage(params, layout)
    evaluations = [table]
    if params.counterfactual.brittleness_queries:
        from kernelscope.counterfactual.brittleness_stages import brittleness_stage  # it reads this module's scores

        evaluations.append(brittleness_stage(params, layout))
    if params.counterfactual.mislabel_fraction:
        evaluations.append(mislabel_stage(params, layout))
    summary = {key: value for part in evaluations for key, value in part.summary.items()}
    return StageResult.of(summary, [], *evaluations, *parts)


def track_counterfactual(params: Params, summary: dict[str, Any], source: str | None = None) -> list[str]:
    """One run per attributor in the 'counterfactual' experiment: LDS with its interval, seconds, peak memory."""
    from kernelscope.core.tracking import RunTags, log_run

    run_ids = []
    for row in summary["lds"]:
        tags = RunTags(
            "counterfactual",
            summary["dataset"],
            row["attributor"].partition(":")[2] or "none",
            params.seed,
            params_hash(params),
            {"attributor": row["attributor"], "checkpoint_hash": summary["checkpoint_hash"], "m": str(summary["m"])},
        )
        metrics = {k: float(row[k]) for k in ("lds", "ci_low", "ci_high", "seconds", "peak_mb")}
        for brittle in summary.get("brittleness", []):
            if brittle["attributor"] in (row["attributor"], RANDOM):
                prefix = "random_flipped" if brittle["attributor"] == RANDOM else "flipped"
                metrics[f"{prefix}_k{brittle['k']}"] = float(brittle["flipped"])
        for found in summary.get("mislabel", []):
            if found["attributor"] == row["attributor"]:
                metrics.update({f"mislabel_{k}": float(found[k]) for k in ("auc", "found_top10", "found_top20")})
        run_ids.append(
            log_run(
                "counterfactual",
                f"{summary['dataset']}-{row['attributor']}",
                tags=tags,
                params={"counterfactual": params.counterfactual.model_dump(mode="json"), "seed": params.seed},
                metrics=metrics,
                artifacts=[summary["lds_plot"], summary["cost_plot"]],
                source=source,
            )
        )
    return run_ids
