"""The NTK-surrogate stages after the kernels: fit the kGLM, evaluate its faithfulness (τ_K, TAD, R_Miss),
attribute, compare the kernel kinds, and log to MLflow. Each stage reads its inputs from a run folder,
writes its outputs there atomically and returns a StageResult: those files with their hashes, and a small summary.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kernelscope import __version__
from kernelscope.core.checks import require_finite_logits
from kernelscope.core.fileio import atomic_path, sha256_file, write_dvc_metrics
from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.core.layout import RunLayout
from kernelscope.core.params import Params, params_hash
from kernelscope.core.provenance import kernel_expect, kernel_provenance, kernel_storage, kglm_provenance, run_model
from kernelscope.core.results import StageResult
from kernelscope.kernels.registry import kernel_kind
from kernelscope.kernels.stages import kernel_stage
from kernelscope.kernels.store import read_kernel, read_kernel_meta
from kernelscope.kernels.topk import kernel_artifact, read_kernel_matrix, row_blocks, row_slices
from kernelscope.models.train import predict_logits
from kernelscope.surrogate.attribution import class_summary, write_attributions, write_topk_attributions
from kernelscope.surrogate.faithfulness import faithfulness, predictions
from kernelscope.surrogate.kglm import fit_kglm, kglm_fit_options, load_kglm, save_kglm
from kernelscope.surrogate.kglm_streaming import fit_streamed, streams
from kernelscope.surrogate.linearization import linearize
from kernelscope.surrogate.plots import attribution_heatmap, probability_scatter


def check_kglm_inputs(params: Params, layout: RunLayout, kind: str) -> None:
    """Verify one kind's train and test kernels against params before anything is fitted or written
    (the kglm command checks every kind first, so a refused file leaves no kind half done)."""
    ds, ckpt = run_model(params, layout)
    for split in ("train", "test"):  # hashed and checked only; the stages read the values (and check their query ids)
        read_kernel_meta(
            layout.kernel_path(kind, split),
            kernel_expect(params, kind, ckpt.checkpoint_hash, ds, split),
            kernel_artifact(kernel_storage(params, kind)),
        )


def fit_kglm_stage(params: Params, layout: RunLayout, kind: str) -> StageResult:
    """Fit the kGLM on the train × train kernel and save it (safetensors)."""
    ds, ckpt = run_model(params, layout)
    kp = params.kglm
    if kp.target == "labels":
        targets = ds.train.y
    else:
        train_logits = predict_logits(ckpt.model, ds.train.x)
        require_finite_logits(train_logits, "training-set NN", layout.model_dir)
        targets = predictions(train_logits)
    path, expect = layout.kernel_path(kind, "train"), kernel_expect(params, kind, ckpt.checkpoint_hash, ds, "train")
    if streams(params, kind, len(ds.train.ids)):
        surrogate, k_meta = fit_streamed(path, expect, ds.train.ids, targets, params)
    else:
        k_train, k_meta = read_kernel_matrix(path, kernel_storage(params, kind), expect=expect, query_ids=ds.train.ids)
        surrogate = fit_kglm(k_train, targets, max_iter=kp.max_iter, **kglm_fit_options(params))
    path = layout.kglm_dir(kind) / "kglm.safetensors"
    save_kglm(
        surrogate,
        path,
        {
            **kglm_provenance(params, kind, ckpt.checkpoint_hash, ds.dataset_hash),
            "train_kernel_sha256": k_meta["content_sha256"],
        },
    )
    summary = {"kind": kind, "path": str(path), "converged": surrogate.converged, "kglm_sha256": sha256_file(path)}
    return StageResult.of(summary, [path])


def evaluate_stage(params: Params, layout: RunLayout, kind: str) -> StageResult:
    """Evaluate the saved kGLM against the NN on the test set; write metrics.json, the CSV and the plot.

    Non-finite weights or logits stop with a named error instead of NaN metrics. A metric that is
    undefined on finite inputs is NaN on purpose: τ_K when either model's correct-class logits are
    all equal (scipy's Kendall tau of a constant), R_Miss when neither model misclassifies anything;
    metrics.json for DVC (write_metrics) records those as null.
    """
    ds, ckpt = run_model(params, layout)
    test_provenance = kernel_expect(params, kind, ckpt.checkpoint_hash, ds, "test")
    k_test, _ = read_kernel_matrix(
        layout.kernel_path(kind, "test"), kernel_storage(params, kind), expect=test_provenance, query_ids=ds.test.ids
    )
    out = layout.kglm_dir(kind)
    surrogate = load_kglm(
        out / "kglm.safetensors", expect=kglm_provenance(params, kind, ckpt.checkpoint_hash, ds.dataset_hash)
    )
    nn_logits, kglm_logits = predict_logits(ckpt.model, ds.test.x), surrogate.logits(k_test)
    require_finite_logits(nn_logits, "test-set NN", layout.model_dir)
    require_finite_logits(kglm_logits, f"test-set kGLM ({kind})", out)
    report, points = faithfulness(ds.test.y, nn_logits, kglm_logits)

    with atomic_path(out / "probabilities.csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["test_id", "label", "kglm_logit", "nn_logit"])
            for row in zip(ds.test.ids, points["label"], points["kglm_logit"], points["nn_logit"]):
                writer.writerow([int(row[0]), int(row[1]), f"{row[2]:.6g}", f"{row[3]:.6g}"])
    title = f"{ds.name} · {kind}: τ_K = {report.tau_k:.3f}, TAD = {report.tad:+.2f} pts"
    plot = probability_scatter(
        out / "probabilities.png", points["kglm_logit"], points["nn_logit"], points["label"], title
    )
    lin = linearize(points, out / "linearization.png", f"{ds.name} · {kind}", report.tau_k)
    attributions_path = out / "attributions.parquet"
    provenance = {**test_provenance, "kglm": params.kglm.model_dump(mode="json")}
    if sp.issparse(k_test):  # only the stored entries' attributions, and the one value every other point has
        blocks = ((ds.test.ids[rows], k_test[rows]) for rows in row_slices(k_test.shape[0]))
        write_topk_attributions(attributions_path, surrogate, blocks, ds.train.ids, provenance, k=params.kernel.topk)
    else:
        blocks = ((ds.test.ids[rows], block) for rows, block in row_blocks(k_test))
        write_attributions(attributions_path, surrogate, blocks, ds.train.ids, provenance)
    summary_by_class = class_summary(surrogate, (block for _, block in row_blocks(k_test)), ds.train.y, ds.n_classes)
    heatmap = attribution_heatmap(
        out / "attribution_by_class.png", summary_by_class, f"{ds.name} · {kind}: mean attribution"
    )
    summary = {
        "dataset": ds.name,
        "kind": kind,
        **report.as_dict(),
        **lin,
        "kglm_converged": surrogate.converged,
        "attributions": str(attributions_path),
        "attribution_by_class": summary_by_class.tolist(),
        "heatmap": str(heatmap),
        "checkpoint_hash": ckpt.checkpoint_hash,
        "dataset_hash": ds.dataset_hash,
        "plot": str(plot),
        "points_csv": str(out / "probabilities.csv"),
    }
    write_json_artifact(out / "metrics.json", summary, "metrics")
    written = [
        out / "probabilities.csv",
        plot,
        lin.get("linearization_plot"),
        attributions_path,
        heatmap,
        out / "metrics.json",
    ]  # no linearization plot when too few points are unsaturated
    return StageResult.of(summary, [path for path in written if path is not None])


def compare_stage(params: Params, layout: RunLayout, summaries: list[dict[str, Any]]) -> StageResult:
    """The kernel comparison (the paper's Table 2 shape) as CSV, Markdown and a bar chart, plus the
    residuals of every projected kernel against its exact counterpart, and the DVC metrics file."""
    from kernelscope.surrogate.comparison import comparison_table, write_comparison

    out = layout.comparison_dir
    table = comparison_table(summaries)
    artifacts = write_comparison(table, out, title=f"{summaries[0]['dataset']}: kernel comparison")
    for s in summaries:
        exact_kind = kernel_kind(s["kind"]).exact
        dense = kernel_storage(params, s["kind"]) == "dense"  # residuals compare every entry
        if exact_kind and dense and layout.kernel_path(exact_kind, "train").exists():
            from kernelscope.surrogate.plots import residual_cdf

            hashes = (s["checkpoint_hash"], s["dataset_hash"], "train")
            approx, _ = read_kernel(
                layout.kernel_path(s["kind"], "train"), expect=kernel_provenance(params, s["kind"], *hashes)
            )
            exact, _ = read_kernel(
                layout.kernel_path(exact_kind, "train"), expect=kernel_provenance(params, exact_kind, *hashes)
            )
            if kernel_kind(exact_kind).normalization != kernel_kind(s["kind"]).normalization:
                # e.g. pNTK is stored unnormalized and its projection as cosines: compare cosines
                d = np.sqrt(np.clip(np.diag(exact), 1e-300, None))
                exact = exact / d[:, None] / d[None, :]
            artifacts.append(
                str(residual_cdf(out / f"residuals_{s['kind']}.png", approx, exact, s["kind"], exact_kind))
            )
    metrics = write_metrics(layout, summaries)
    return StageResult.of({"table": table, "artifacts": artifacts}, [*artifacts, metrics])


def write_metrics(layout: RunLayout, summaries: list[dict[str, Any]]) -> Path:
    """The DVC metrics file: {kind: {tau_k, tad, r_miss, nn_accuracy, kglm_accuracy}}."""
    keys = ("tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")
    return write_dvc_metrics(layout.metrics_path, {s["kind"]: {k: s[k] for k in keys} for s in summaries})


def with_arch(params: Params, arch: str) -> Params:
    """params with train.arch set: the multi-seed table's architecture (mlp, or cnn for the cnn section)."""
    return params.model_copy(update={"train": params.train.model_copy(update={"arch": arch})})


def seed_run(params: Params, layout: RunLayout, arch: str, kind: str, trained: dict[str, Any]) -> StageResult:
    """One row of a multi-seed table on the model trained with params.seed (models.stages.train_seeds_stage;
    ``trained``: its train summary): kernel, kGLM and metrics for one kind."""
    params = with_arch(params, arch)
    kernels = kernel_stage(params, layout, kind, progress=False)
    fitted = fit_kglm_stage(params, layout, kind)
    evaluated = evaluate_stage(params, layout, kind)
    summary = {
        **evaluated.summary,
        "arch": arch,
        "seed": params.seed,
        "train_accuracy": trained["train_accuracy"],
    }
    return StageResult.of(summary, [], kernels, fitted, evaluated)


def track_attribution(
    params: Params,
    summaries: list[dict[str, Any]],
    *,
    source: str | None = None,
    experiment: str = "attribution",
    comparison_artifacts: list[str] = (),
) -> list[str]:
    """Log one MLflow run per kernel kind (params, τ_K, TAD, R_Miss, accuracies, hashes, scatter plot)
    and one comparison run per dataset (every kind's metrics, the table, the bar chart, residuals)."""
    from kernelscope.core.tracking import RunTags, log_run

    def tags(s: dict[str, Any], kernel: str, **extra: str) -> RunTags:
        return RunTags(
            experiment,
            s["dataset"],
            kernel,
            params.seed,
            params_hash(params),
            {
                "checkpoint_hash": s["checkpoint_hash"],
                "dataset_hash": s["dataset_hash"],
                "kernelscope_version": __version__,
                **extra,
            },
        )

    run_params = {
        "seed": params.seed,
        "data": params.data.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "kernel": params.kernel.model_dump(mode="json"),
        "kglm": params.kglm.model_dump(mode="json"),
    }
    run_ids = []
    for s in summaries:
        metrics = {
            k: s[k] for k in ("tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy", "r2_linearization") if k in s
        }
        artifacts = [s[k] for k in ("plot", "points_csv", "linearization_plot", "heatmap") if k in s]
        run_ids.append(
            log_run(
                experiment,
                f"{s['dataset']}-{s['kind']}",
                params={**run_params, "dataset": s["dataset"], "kernel": s["kind"]},
                metrics=metrics,
                artifacts=artifacts,
                source=source,
                tags=tags(
                    s,
                    s["kind"],
                    kglm_converged=str(s["kglm_converged"]),
                    linearization=str(s.get("linearization", "n/a")),
                ),
            )
        )
    if summaries and comparison_artifacts:
        first = summaries[0]
        metrics = {f"{k}.{s['kind']}": s[k] for s in summaries for k in ("tau_k", "tad", "r_miss")}
        metrics["nn_accuracy"] = first["nn_accuracy"]
        run_ids.append(
            log_run(
                experiment,
                f"{first['dataset']}-comparison",
                params={**run_params, "dataset": first["dataset"]},
                metrics=metrics,
                tags=tags(first, "comparison"),
                artifacts=list(comparison_artifacts),
                source=source,
            )
        )
    return run_ids
