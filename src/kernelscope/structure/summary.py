"""A structure run in one record: the subject's headline metrics, the files written, and its MLflow run."""

from __future__ import annotations

from typing import Any

from kernelscope.core.fileio import write_json_atomic
from kernelscope.core.params import Params
from kernelscope.structure.subjects import Subject, out_dir


def structure_summary(
    subject: Subject, spectra: dict, degeneracy: dict, interaction: dict, coordinates: dict, parameters: dict
) -> dict[str, Any]:
    """Flat metrics for MLflow and the main job's table, and the files to log."""
    metrics: dict[str, float] = {}
    for p in spectra["pairs"]:
        where = f"{p['source']}_to_{p['target']}"
        for key in ("rank_stacked", "rank_mass_stacked", "participation_stacked", "rank_per_point_mean"):
            metrics[f"jacobian.{where}.{key}"] = float(p[key])
    for row in degeneracy["layers"]:
        for side in ("activation", "gradient"):
            metrics[f"degeneracy.{row['layer']}.{side}_rank"] = float(row[side]["rank"])
            metrics[f"degeneracy.{row['layer']}.{side}_degenerate"] = float(row[side]["degenerate_directions"])
        for key in ("dead", "always_on", "sync_groups", "sync_neurons"):
            if "relu" in row:
                metrics[f"degeneracy.{row['layer']}.relu_{key}"] = float(row["relu"][key])
    for row in interaction["layers"]:
        metrics[f"ablation.{row['layer']}.needed_interaction"] = float(row["needed_interaction"])
        metrics[f"ablation.{row['layer']}.needed_pca"] = float(row["needed_pca"])
    metrics["coordinate_free_kept"] = float(coordinates["coordinate_free_kept"])
    metrics.update({k: float(v) for k, v in parameters.items()})
    files = [
        spectra["plot"],
        degeneracy["plot"],
        interaction["plot"],
        spectra["table"],
        spectra["path"],
        degeneracy["path"],
        interaction["path"],
        coordinates["path"],
    ]
    summary = {
        "subject": subject.name,
        "checkpoint_hash": subject.checkpoint_hash,
        "layers": subject.layers,
        "metrics": metrics,
        "parameters": parameters,
        "coordinate_free_kept": coordinates["coordinate_free_kept"],
        "neuron_basis_changed": coordinates["neuron_basis_changed"],
        "files": files,
    }
    write_json_atomic(out_dir(subject) / "summary.json", summary)
    return summary


def track_structure(params: Params, summary: dict[str, Any], *, source: str | None = None) -> str:
    """Log a structure run to the 'structure' experiment: effective ranks, degeneracy, ablation, figures and tables."""
    from kernelscope.core.params import params_hash
    from kernelscope.core.tracking import RunTags, log_run

    tags = RunTags(
        "structure",
        summary["subject"],
        "jacobian",
        params.seed,
        params_hash(params),
        {
            "checkpoint_hash": summary["checkpoint_hash"],
            "layers": ",".join(summary["layers"]),
            "coordinate_free_kept": str(summary["coordinate_free_kept"]),
        },
    )
    return log_run(
        "structure",
        f"{summary['subject']}-structure",
        tags=tags,
        params={"structure": params.structure.model_dump(mode="json"), "seed": params.seed},
        metrics=summary["metrics"],
        artifacts=summary["files"],
        source=source,
    )
