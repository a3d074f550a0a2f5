"""Stages of the forensics run: poison → train → kernels → kGLM → detection and trace-back.

Layout under the run folder: data/ (poisoned train with an `is_poisoned` column, clean test,
test_poisoned with an `is_target_class` column), model/, kernels/<kind>/{train,test,test_poisoned},
kglm/<kind>/, forensics/ (Table-3-shaped CSV and Markdown, PR curves, neighbour grids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kernelscope.core.fileio import write_json_atomic
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params
from kernelscope.core.provenance import (
    data_provenance,
    kglm_provenance,
    poisoning,
    run_checkpoint,
    run_data,
    run_model,
)
from kernelscope.core.results import StageResult
from kernelscope.core.tables import markdown_table, write_table_files
from kernelscope.data.datasets import Split, make_digits, read_column, read_split, write_dataset, write_split
from kernelscope.forensics.detection import (
    flag_by_neighbours,
    precision_recall,
    top_k_indices,
    trace_back,
    trace_back_scores,
)
from kernelscope.forensics.poison import Trigger, attack_success_rate, badnets
from kernelscope.kernels.stages import kernel_stage, read_run_kernel
from kernelscope.kernels.topk import KernelMatrix
from kernelscope.models.stages import train_stage
from kernelscope.models.train import predict_logits
from kernelscope.surrogate.faithfulness import faithfulness, predictions
from kernelscope.surrogate.kglm import load_kglm
from kernelscope.surrogate.stages import evaluate_stage, fit_kglm_stage

POISONED_TEST = "test_poisoned"


def trigger_of(params: Params) -> Trigger:
    p = params.poison
    return Trigger(p.trigger_size, p.trigger_margin, p.trigger_value, p.trigger_pattern, p.trigger_position)


def poison_stage(params: Params, layout: RunLayout) -> StageResult:
    p = params.poison
    clean = make_digits(p.dataset, params.data.test_fraction, params.seed)
    poisoned = badnets(clean, fraction=p.fraction, target=p.target, trigger=trigger_of(params), seed=params.seed)
    provenance = {
        **data_provenance(params, poisoned.dataset.name),
        "poison": poisoning(params),
        "clean_dataset_hash": clean.dataset_hash,
    }
    written = write_dataset(
        poisoned.dataset, layout.data_dir, provenance, extra={"train": {"is_poisoned": poisoned.is_poisoned}}
    )
    meta = {
        "dataset": poisoned.dataset.name,
        "split": POISONED_TEST,
        "n_classes": clean.n_classes,
        "image_shape": list(clean.image_shape),
        "dataset_hash": poisoned.dataset.dataset_hash,
        **provenance,
    }
    stamped = write_split(
        layout.data_dir / f"{POISONED_TEST}.parquet",
        poisoned.test_poisoned,
        meta,
        {"is_target_class": poisoned.test_is_target_class},
    )
    summary = {**written, "n_poisoned": int(poisoned.is_poisoned.sum()), "n_train": len(poisoned.is_poisoned)}
    return StageResult.of(summary, [written["train"], written["test"], stamped])


def poisoned_train_stage(params: Params, layout: RunLayout) -> StageResult:
    """Train on the poisoned set; clean accuracy and attack success rate."""
    trained = train_stage(params, layout, progress=False)
    summary = trained.summary
    ckpt = run_checkpoint(params, layout.model_dir, run_data(params, layout))
    stamped = poisoned_test(layout, summary["dataset_hash"])
    pred = predictions(predict_logits(ckpt.model, stamped.x))
    success = attack_success_rate(pred, stamped.y, params.poison.target)
    summary = {**summary, "clean_test_accuracy": summary["test_accuracy"], "attack_success_rate": success}
    return StageResult.of(summary, [], trained)


def poisoned_test(layout: RunLayout, dataset_hash: str) -> Split:
    """The stamped test split, verified and of the same poisoning run as the training data."""
    stamped, _ = read_split(layout.data_dir / f"{POISONED_TEST}.parquet", expect={"dataset_hash": dataset_hash})
    return stamped


def forensic_kernel_stage(params: Params, layout: RunLayout, kind: str) -> StageResult:
    stamped = poisoned_test(layout, run_data(params, layout).dataset_hash)
    return kernel_stage(params, layout, kind, progress=False, extra_queries={POISONED_TEST: (stamped.x, stamped.ids)})


def forensic_kglm_stage(params: Params, layout: RunLayout, kind: str) -> StageResult:
    """kGLM on the poisoned training set; faithfulness on the clean and on the poisoned test set."""
    params = params.model_copy(update={"kglm": params.kglm.model_copy(update={"alpha": params.poison.kglm_alpha})})
    fitted = fit_kglm_stage(params, layout, kind)
    evaluated = evaluate_stage(params, layout, kind)
    clean = evaluated.summary
    ds, ckpt = run_model(params, layout)
    stamped = poisoned_test(layout, ds.dataset_hash)
    k_poisoned, _ = read_run_kernel(params, layout, ds, ckpt.checkpoint_hash, kind, POISONED_TEST, stamped.ids)
    surrogate = load_kglm(
        layout.kglm_dir(kind) / "kglm.safetensors",
        expect=kglm_provenance(params, kind, ckpt.checkpoint_hash, ds.dataset_hash),
    )
    poisoned, _ = faithfulness(stamped.y, predict_logits(ckpt.model, stamped.x), surrogate.logits(k_poisoned))
    summary = {
        "kind": kind,
        "clean": {k: clean[k] for k in ("tau_k", "tad", "r_miss")},
        "poisoned": {k: getattr(poisoned, k) for k in ("tau_k", "tad", "r_miss")},
    }
    return StageResult.of(summary, [], fitted, evaluated)


def _stacked(first: KernelMatrix, second: KernelMatrix) -> KernelMatrix:
    """Rows of two kernels of one storage, dense or top-k (CSR), one after the other."""
    if sp.issparse(first):
        return sp.vstack([first, second], format="csr")
    return np.concatenate([first, second])


def detection_stage(params: Params, layout: RunLayout, faith: list[dict[str, Any]]) -> StageResult:
    """Per kernel: k-of-m flags over clean ∪ poisoned test points, precision/recall, trace-back, pictures."""
    from kernelscope.forensics.plots import poisoned_neighbour_grid, trace_back_curves

    p = params.poison
    ds = run_data(params, layout)
    checkpoint_hash = layout.checkpoint_hash()
    is_poisoned = read_column(layout.data_dir / "train.parquet", "is_poisoned").astype(bool)
    stamped = poisoned_test(layout, ds.dataset_hash)
    out = layout.root / "forensics"
    rows, curves = [], {}
    for f in faith:
        kind = f["kind"]
        # Dense, or top-k (ranked among the stored entries).
        k_clean, _ = read_run_kernel(params, layout, ds, checkpoint_hash, kind, "test", ds.test.ids)
        k_stamped, _ = read_run_kernel(params, layout, ds, checkpoint_hash, kind, POISONED_TEST, stamped.ids)
        k_all = _stacked(k_clean, k_stamped)  # (n_test · 2, N): clean first, then stamped
        n_clean, n_stamped = k_clean.shape[0], k_stamped.shape[0]
        truth = np.concatenate([np.zeros(n_clean, bool), np.ones(n_stamped, bool)])
        flags = flag_by_neighbours(k_all, is_poisoned, p.k, p.m)
        pr = precision_recall(flags, truth)
        # Stamped points whose true label is the target cannot show the attack: recall without them too.
        is_target = read_column(layout.data_dir / f"{POISONED_TEST}.parquet", "is_target_class").astype(bool)
        attack_capable = np.concatenate([np.ones(n_clean, bool), ~is_target])
        pr_capable = precision_recall(flags[attack_capable], truth[attack_capable])
        scores = trace_back_scores(k_all[flags], k_all[~flags]) if flags.any() else np.zeros(len(is_poisoned))
        traced = trace_back(scores, is_poisoned)
        curves[kind] = traced.pop("curve")
        rows.append(
            {
                "kernel": kind,
                "precision": pr.precision,
                "recall": pr.recall,
                "tp": pr.tp,
                "fp": pr.fp,
                "fn": pr.fn,
                "precision_non_target": pr_capable.precision,
                "recall_non_target": pr_capable.recall,
                "trace_precision": traced["precision_at_p"],
                "trace_recall": traced["recall_at_p"],
                "trace_average_precision": traced["average_precision"],
                **{f"clean_{k}": v for k, v in f["clean"].items()},
                **{f"poisoned_{k}": v for k, v in f["poisoned"].items()},
            }
        )
        neighbours = top_k_indices(k_stamped[:8], 5)
        poisoned_neighbour_grid(
            out / f"neighbours_{kind}.png",
            stamped.x[:8].reshape(-1, *ds.image_shape),
            ds.train.x[neighbours].reshape(*neighbours.shape, *ds.image_shape),
            is_poisoned[neighbours],
            f"{kind}: stamped test images and their top-5 training neighbours (red: poisoned)",
        )
    pr_plot = trace_back_curves(out / "trace_back_pr.png", curves, int(is_poisoned.sum()))
    table_paths = write_table3(rows, out)
    write_json_atomic(out / "forensics.json", {"rows": rows})
    artifacts = [*table_paths, str(pr_plot), *[str(out / f"neighbours_{f['kind']}.png") for f in faith]]
    return StageResult.of({"rows": rows, "artifacts": artifacts}, [*artifacts, out / "forensics.json"])


TABLE3 = (
    ("precision", "Precision (%)", 100),
    ("recall", "Recall (%)", 100),
    ("recall_non_target", "Recall, non-target (%)", 100),
    ("clean_tau_k", "τ_K", 1),
    ("clean_tad", "TAD (%)", 1),
    ("clean_r_miss", "R_Miss", 1),
    ("poisoned_tau_k", "poi. τ_K", 1),
    ("poisoned_tad", "poi. TAD (%)", 1),
    ("poisoned_r_miss", "poi. R_Miss", 1),
    ("trace_precision", "trace-back P (%)", 100),
    ("trace_recall", "trace-back R (%)", 100),
)


def write_table3(rows: list[dict[str, Any]], out: Path) -> list[str]:
    def fmt(v: float, scale: float) -> str:
        return "n/a" if v is None or np.isnan(v) else f"{scale * v:.2f}" if scale == 100 else f"{v:.3f}"

    shown = [[r["kernel"], *(fmt(r[k], s) for k, _, s in TABLE3)] for r in rows]
    raw = [[r["kernel"], *(f"{r[k]:.6g}" for k, _, _ in TABLE3)] for r in rows]
    markdown = markdown_table(["kernel", *(label for _, label, _ in TABLE3)], shown)
    paths = write_table_files(out, "table3", markdown=markdown, csv=(["kernel", *(k for k, _, _ in TABLE3)], raw))
    return [paths[1], paths[0]]  # .md first, as before


def track_forensics(
    params: Params,
    result: dict[str, Any],
    *,
    checkpoint_hash: str,
    extra_metrics: dict[str, float] | None = None,
    source: str | None = None,
) -> str:
    """Log a detection result to the 'forensics' experiment: precision, recall and trace-back per kernel."""
    from kernelscope.core.params import params_hash
    from kernelscope.core.tracking import RunTags, log_run

    p = params.poison
    metrics = dict(extra_metrics or {})
    for row in result["rows"]:
        metrics.update(
            {
                f"{key}.{row['kernel']}": row[key]
                for key in ("precision", "recall", "trace_precision", "trace_recall", "clean_tau_k", "poisoned_tau_k")
                if row[key] == row[key]
            }
        )
    tags = RunTags(
        "forensics",
        p.dataset,
        ",".join(p.kinds),
        params.seed,
        params_hash(params),
        {"checkpoint_hash": checkpoint_hash},
    )
    return log_run(
        "forensics",
        f"{p.dataset}-badnets",
        tags=tags,
        params={"poison": p.model_dump(mode="json"), "seed": params.seed},
        metrics=metrics,
        artifacts=result["artifacts"],
        source=source,
    )
