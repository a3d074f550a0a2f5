"""The multitask validation run: train the modular model, sample losses around it, measure task separation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kernelscope.core.json_artifacts import write_json_artifact
from kernelscope.core.param_loss_kernel import MultitaskParams
from kernelscope.core.params import Params
from kernelscope.core.provenance import multitask_spec
from kernelscope.core.results import StageResult
from kernelscope.core.threads import fixed_threads
from kernelscope.loss_kernel.kernel import loss_correlation, loss_covariance
from kernelscope.loss_kernel.multitask import (
    ADD,
    DIV,
    GROKKED,
    MultitaskData,
    TrainingCurve,
    make_multitask_data,
    task_contrast,
    task_separation,
    train_multitask,
)
from kernelscope.loss_kernel.sgld import SGLDConfig, SGLDResult, sample
from kernelscope.loss_kernel.stages import label_agreement, write_probe_losses
from kernelscope.models.checkpoint import load_checkpoint, save_checkpoint
from kernelscope.models.heads import precise_per_sample_loss
from kernelscope.models.stages import checkpoint_files

KNN_PURITY_K = 10  # neighbours under R for the task purity (the base rate of two equal tasks: 0.5)


def train_by_section(mp: MultitaskParams, seed: int) -> tuple[nn.Module, dict[str, float], TrainingCurve]:
    """The modular model trained by the multitask section's recipe, on its data split for ``seed``."""
    data = make_multitask_data(mp.p, mp.train_fraction, seed)
    with fixed_threads(mp.threads):
        return train_multitask(
            data,
            steps=mp.steps,
            lr=mp.lr,
            weight_decay=mp.weight_decay,
            batch_size=mp.batch_size,
            seed=seed,
            embed=mp.embed,
            hidden=mp.hidden,
            arch=mp.arch,
            heads=mp.heads,
            grokfast_alpha=mp.grokfast_alpha,
            grokfast_lamb=mp.grokfast_lamb,
            decay_fraction=mp.decay_fraction,
            eval_every=mp.eval_every,
            settle_steps=mp.settle_steps,
        )


def multitask_train_stage(params: Params, root: Path) -> StageResult:
    from kernelscope.loss_kernel.plots import grokking_curve

    mp = params.multitask
    root = Path(root)
    model, acc, curve = train_by_section(mp, params.seed)
    meta = save_checkpoint(model, root / "model", multitask_spec(params), dataset_name=f"modular-{mp.p}", metrics=acc)
    grok_step = curve.steps_to_grok()
    outputs = checkpoint_files(root / "model")
    plots = []
    if curve.steps:
        # No seconds in the file: the same params give the same bytes (they are in the summary).
        outputs.append(write_training_curve(root / "training" / "curve.json", curve, meta["weights_sha256"], grok_step))
        plots.append(
            grokking_curve(
                root / "training" / "grokking.png",
                curve.steps,
                curve.accuracies,
                f"multitask training (seed {params.seed}): grokked at step {grok_step or 'never'}",
            )
        )
    seconds = curve.seconds_to_grok()
    summary = {
        "checkpoint_hash": meta["weights_sha256"],
        **acc,
        "steps_to_grok": float(grok_step) if grok_step is not None else None,
        "seconds_to_grok": seconds,
        "training_seconds": curve.seconds[-1] if curve.seconds else None,
        "plots": [str(p) for p in plots],
    }
    return StageResult.of(summary, [*outputs, *plots])


def write_training_curve(path: Path, curve: TrainingCurve, checkpoint_hash: str, grok_step: int | None) -> Path:
    write_json_artifact(
        path,
        {
            "checkpoint_hash": checkpoint_hash,
            "grokked_at": GROKKED,
            "steps_to_grok": grok_step,
            "steps": curve.steps,
            "train_loss": curve.train_loss,
            "accuracies": curve.accuracies,
        },
        "multitask-training-curve",
    )
    return path


def multitask_probes(data: MultitaskData, probes_per_task: int, seed: int) -> np.ndarray:
    """(2 · probes_per_task,) sorted row ids: a seeded sample of each task's test points."""
    rng = np.random.default_rng(seed)
    task = data.x[:, 2]
    per_task = [rng.choice(data.test[task[data.test] == t], probes_per_task, replace=False) for t in (ADD, DIV)]
    return np.sort(np.concatenate(per_task))


def sample_multitask(params: Params, root: Path) -> tuple[MultitaskData, np.ndarray, SGLDResult, str]:
    """SGLD around the modular model under ``root``/model: (data, probe row ids, the sampler's result, checkpoint
    hash)."""
    mp = params.multitask
    data = make_multitask_data(mp.p, mp.train_fraction, params.seed)
    ckpt = load_checkpoint(Path(root) / "model", multitask_spec(params))
    probes = multitask_probes(data, mp.probes_per_task, params.seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    train = torch.from_numpy(data.train)
    config = SGLDConfig.from_section(mp, "multitask", mp.sgld_batch_size, params.seed, mp.sgld_threads)
    result = sample(ckpt.model, precise_per_sample_loss, x[train], y[train], x[probes], y[probes], config)
    return data, probes, result, ckpt.checkpoint_hash


def separation_summary(result: SGLDResult, probe_task: np.ndarray) -> dict[str, Any]:
    """Task separation of the probe losses (PC1 AUC pooled over chains, and within chains; the share of each
    probe's 10 nearest under R of its own task; the mean R within and across tasks, with a permutation z-score),
    the LLC and the health notes."""
    separation = task_separation(result.probe_losses, result.loss_at_optimum, probe_task)
    within = task_separation(
        result.probe_losses - result.probe_losses.mean(axis=2, keepdims=True) + result.loss_at_optimum[:, None, None],
        result.loss_at_optimum,
        probe_task,
    )
    corr = loss_correlation(loss_covariance(result.probe_losses))
    purity = label_agreement(corr, probe_task, KNN_PURITY_K)
    return {
        "task_auc": separation["auc"],
        "task_auc_within_chain": within["auc"],
        "task_knn_purity": purity["agreement"],
        "pc1_explained": separation["pc1_explained"],
        **task_contrast(corr, probe_task),
        "llc": result.llc,
        **result.step_summary(),
        "warnings": result.warnings,
    }


def multitask_loss_stage(params: Params, root: Path) -> StageResult:
    from kernelscope.loss_kernel.plots import correlation_heatmap, group_covariances, umap_embedding, umap_map

    mp = params.multitask
    root = Path(root)
    data, probes, result, checkpoint_hash = sample_multitask(params, root)
    task = data.x[:, 2]
    out = root / "loss_kernel"
    write_probe_losses(
        out / "probe_losses.parquet",
        result.probe_losses,
        result.loss_at_optimum,
        probes,
        {
            "checkpoint_hash": checkpoint_hash,
            "orientation": "(probe, chain, draw)",
            "sgld": mp.model_dump(mode="json"),
            "seed": params.seed,
        },
    )
    probe_task = task[probes]
    cov = loss_covariance(result.probe_losses)
    corr = loss_correlation(cov)
    # The trivial division case a = 0 (answer 0 for every b): its own group if its mutual correlation stands out.
    trivial = (probe_task == DIV) & (data.x[probes, 0] == 0)
    off = ~np.eye(len(probes), dtype=bool)
    trivial_stats = {"n_trivial_probes": int(trivial.sum())}
    if trivial.sum() >= 2:
        trivial_stats["trivial_within_corr"] = float(
            corr[np.ix_(trivial, trivial)][off[np.ix_(trivial, trivial)]].mean()
        )
        trivial_stats["trivial_to_others_corr"] = float(corr[np.ix_(trivial, ~trivial)].mean())
    groups = probe_task + 2 * trivial  # 0 add, 1 division, 3 division with a = 0
    plots = [
        correlation_heatmap(out / "correlation.png", corr, groups, "multitask: loss correlation (add | div | div a=0)"),
        group_covariances(
            out / "covariance_groups.png",
            cov,
            probe_task,
            "multitask: covariance within and across tasks (the paper's Fig. 3D)",
            names={ADD: "add", DIV: "div"},
        ),
    ]
    cluster_stats = {}
    if mp.umap:
        from sklearn.metrics import silhouette_score

        embedding = umap_embedding(corr, seed=params.seed)  # (n_probe, 2)
        colourings = {
            "task (0 add, 1 div, 3 div with a = 0)": (groups, "tab10"),
            "input b": (data.x[probes, 1], "viridis"),
        }
        plots.append(
            umap_map(out / "umap.png", embedding, colourings, "multitask: UMAP of 1 − R (the paper's Fig. 3A, C)")
        )
        cluster_stats["umap_task_silhouette"] = float(silhouette_score(embedding, probe_task))
    summary = {
        **separation_summary(result, probe_task),
        **cluster_stats,
        **trivial_stats,
        "plots": [str(p) for p in plots],
        "path": str(out / "probe_losses.parquet"),
    }
    write_json_artifact(out / "summary.json", summary, "loss-kernel-summary")
    return StageResult.of(summary, [out / "probe_losses.parquet", *plots, out / "summary.json"])
