"""The brittleness evaluation as stages: the retrainings of each k in stacks, one task each in the counterfactual
flow (``brittleness_stack_stage``, cached as verified files), then the table (``brittleness_stage``), which trains
any stack not there yet, as the DVC stage does for all of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.core.artifact_errors import mismatch_error
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import run_model
from kernelscope.core.results import StageResult
from kernelscope.core.tables import markdown_table, write_table_files
from kernelscope.core.tensor_artifacts import read_safetensors, write_safetensors
from kernelscope.counterfactual.brittleness import (
    RANDOM,
    RemovalJobs,
    brittleness_queries,
    flips_from,
    removal_jobs,
    removal_orders,
    stack_wrong,
)
from kernelscope.counterfactual.lds import bootstrap_mean
from kernelscope.counterfactual.plots import brittleness_curves
from kernelscope.counterfactual.stages import read_scores
from kernelscope.data.datasets import Dataset

BRITTLENESS_ARTIFACT = "brittleness-stack"
BRITTLENESS_SEED_OFFSET = 5000  # retraining seeds of the brittleness models: seed + 5000 + r


@dataclass(frozen=True)
class BrittlenessSetup:
    """What every brittleness retraining of a run shares: its data, recipe, queries and removal orders."""

    ds: Dataset
    arch: str
    section: Any
    queries: np.ndarray  # (q,) test rows
    orders: dict[str, np.ndarray]  # attributor (and 'random') -> (q, N) training rows, most supportive first
    seeds: np.ndarray  # (s,) retraining seeds

    def jobs(self, params: Params) -> dict[int, RemovalJobs]:
        cf = params.counterfactual
        return {k: removal_jobs(self.orders, k, self.seeds, cf.models_per_stack) for k in cf.brittleness_k}


def brittleness_setup(params: Params, layout: RunLayout) -> BrittlenessSetup:
    from kernelscope.core.provenance import training_section
    from kernelscope.models.train import predict_logits

    cf = params.counterfactual
    ds, ckpt = run_model(params, layout)
    queries = brittleness_queries(ds, predict_logits(ckpt.model, ds.test.x), cf.brittleness_queries, params.seed)
    arch, section = training_section(params, ds.name)
    orders = {
        name: removal_orders(
            None if name == RANDOM else read_scores(params, layout, ds, ckpt.checkpoint_hash, name)[0],
            queries,
            len(ds.train.y),
            params.seed,
        )
        for name in (*cf.attributors, RANDOM)
    }
    seeds = params.seed + BRITTLENESS_SEED_OFFSET + np.arange(cf.brittleness_seeds)
    return BrittlenessSetup(ds, arch, section, queries, orders, seeds)


def brittleness_stack_path(layout: RunLayout, jobs: RemovalJobs, b: int) -> Path:
    """counterfactual/brittleness/k<k>-<jobs hash>.safetensors: other removals or seeds make another file."""
    return layout.counterfactual_dir / "brittleness" / f"k{jobs.k}-{jobs.digest(b)[:16]}.safetensors"


def ensure_brittleness_stack(
    layout: RunLayout, setup: BrittlenessSetup, jobs: RemovalJobs, b: int
) -> tuple[Path, np.ndarray]:
    """(path, (models, q) wrong predictions) of stack b of jobs: verified from its file, or trained and written."""
    expect = {
        "dataset_hash": setup.ds.dataset_hash,
        "arch": setup.arch,
        "training": setup.section.model_dump(mode="json"),
        "k": jobs.k,
        "jobs_sha256": jobs.digest(b),
        "models": len(jobs.stack(b)),
        "queries": [int(q) for q in setup.queries],
        "target": "prediction wrong on each query after retraining without the removed rows",
    }
    path = brittleness_stack_path(layout, jobs, b)
    if path.exists():
        arrays, _ = read_safetensors(path, BRITTLENESS_ARTIFACT, expect)
        wrong = arrays.get("wrong")
        if wrong is None or wrong.shape != (len(jobs.stack(b)), len(setup.queries)):
            raise mismatch_error(path, BRITTLENESS_ARTIFACT)
        return path, wrong.astype(bool)
    wrong = stack_wrong(setup.ds, setup.section, jobs, b, setup.queries)
    write_safetensors(path, {"wrong": wrong.astype(np.uint8)}, BRITTLENESS_ARTIFACT, expect)
    return path, wrong


def brittleness_plan_stage(params: Params, layout: RunLayout) -> StageResult:
    """How many stacks of retrainings each k of counterfactual.brittleness_k takes: [[k, stacks], ...]."""
    plan = [[k, jobs.stacks] for k, jobs in brittleness_setup(params, layout).jobs(params).items()]
    return StageResult.of({"stacks": plan}, [])


def brittleness_stack_stage(params: Params, layout: RunLayout, k: int, b: int) -> StageResult:
    """Stack b of the brittleness retrainings without k points, cached as a verified file."""
    setup = brittleness_setup(params, layout)
    path, wrong = ensure_brittleness_stack(layout, setup, setup.jobs(params)[k], b)
    return StageResult.of({"k": k, "stack": b, "models": int(len(wrong)), "path": str(path)}, [path])


def brittleness_stage(params: Params, layout: RunLayout) -> StageResult:
    """Fraction of correctly classified queries whose prediction flips when each attributor's top-k supporters
    (or k random points) are removed and the model retrained; bootstrap intervals over queries. Stacks already
    trained (``brittleness_stack_stage``) are read back; the rest are trained here."""
    cf = params.counterfactual
    setup = brittleness_setup(params, layout)
    ds, queries, orders, out = setup.ds, setup.queries, setup.orders, layout.counterfactual_dir
    flips, stack_files = {}, []
    for k, jobs in setup.jobs(params).items():
        stacks = [ensure_brittleness_stack(layout, setup, jobs, b) for b in range(jobs.stacks)]
        stack_files += [path for path, _ in stacks]
        flips[k] = flips_from(jobs, [wrong for _, wrong in stacks], orders, setup.seeds, len(queries))
    rows = []
    for name in orders:
        for k in cf.brittleness_k:
            ci = bootstrap_mean(flips[k][name].mean(1), params.seed, cf.bootstrap)  # over queries
            rows.append({"attributor": name, "k": k, "flipped": ci.mean, "ci_low": ci.low, "ci_high": ci.high})
    header = ("attributor", "k", "flipped", "ci_low", "ci_high")
    cells = [[r["attributor"], str(r["k"]), *(f"{r[c]:.4f}" for c in header[2:])] for r in rows]
    title = f"{ds.name}: predictions flipped after removing k training points ({len(queries)} queries)"
    written = write_table_files(
        out,
        "brittleness",
        markdown=markdown_table(header, cells, text_columns=1, title=title),
        csv=(header, cells),
        json_cells=(header, cells),
    )
    written.append(brittleness_curves(out / "brittleness.png", rows, title))
    return StageResult.of({"dataset": ds.name, "queries": len(queries), "brittleness": rows}, stack_files + written)
