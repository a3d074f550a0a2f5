"""Structure-probe stages on a checkpoint the platform holds: each writes its artifacts under
<run>/structure/ and returns a StageResult, those files and a JSON-able summary (the flow's cached tasks and the CLI
call these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kernelscope.core.artifacts import verify_parquet, write_parquet
from kernelscope.core.errors import ArtifactError
from kernelscope.core.fileio import write_json_atomic, write_text_atomic
from kernelscope.core.json_artifacts import read_json_artifact
from kernelscope.core.params import Params
from kernelscope.core.results import StageResult
from kernelscope.structure.degeneracy import (
    activation_gram,
    activation_moments,
    effective_parameters,
    firing_groups,
    gradient_gram,
    gram_spectrum,
    is_relu_layer,
    relu_activations,
    spectrum_summary,
)
from kernelscope.structure.interaction import Basis, ablation_curve, directions_needed, interaction_bases, pca_basis
from kernelscope.structure.reparameterize import coordinate_check
from kernelscope.structure.spectra import layer_spectra
from kernelscope.structure.subjects import Subject, load_subject, one_blas_thread, out_dir
from kernelscope.structure.summary import structure_summary


@one_blas_thread
def spectra_stage(params: Params, subject: Subject) -> StageResult:
    """Jacobian spectra of every adjacent layer pair: a Parquet of per-point spectra, a plot, effective ranks."""
    from kernelscope.structure.plots import jacobian_spectra

    sp = params.structure
    pairs = layer_spectra(
        subject.model, subject.x_fit, subject.layers, chunk_size=sp.chunk_size, rtol=sp.rank_rtol, mass=sp.mass
    )
    out = out_dir(subject)
    rows = {"source": [], "target": [], "point_id": [], "singular_values": []}
    for p in pairs:
        rows["source"] += [p.source] * len(p.per_point)
        rows["target"] += [p.target] * len(p.per_point)
        rows["point_id"] += subject.fit_ids.tolist()
        rows["singular_values"] += [s.astype(np.float32).tolist() for s in p.per_point]
    table = pa.table(
        {
            "source": pa.array(rows["source"]),
            "target": pa.array(rows["target"]),
            "point_id": pa.array(rows["point_id"], pa.int64()),
            "singular_values": pa.array(rows["singular_values"], pa.list_(pa.float32())),
        }
    )
    meta = {
        "checkpoint_hash": subject.checkpoint_hash,
        "subject": subject.name,
        "layers": subject.layers,
        "rank_rtol": sp.rank_rtol,
        "mass": sp.mass,
        "orientation": "per point: singular values of d h_target / d h_source, descending",
    }
    path = out / "jacobian_spectra.parquet"
    write_parquet(path, table, "jacobian-spectra", meta)
    pair_rows = [
        {
            "source": p.source,
            "target": p.target,
            "shape": list(p.shape),
            **p.summary,
            "stacked": p.stacked.tolist(),
            "per_point_mean": p.per_point.mean(0).tolist(),
        }
        for p in pairs
    ]
    plot = jacobian_spectra(
        out / "jacobian_spectra.png", pair_rows, f"{subject.name}: layer Jacobian spectra ({len(subject.x_fit)} points)"
    )
    columns = (
        "source",
        "target",
        "rank_stacked",
        "rank_mass_stacked",
        "participation_stacked",
        "rank_per_point_mean",
        "rank_per_point_min",
        "rank_per_point_max",
        "rank_mass_per_point_mean",
        "participation_per_point_mean",
    )
    lines = [",".join(columns)] + [
        ",".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns) for row in pair_rows
    ]
    table_path = write_text_atomic(out / "effective_ranks.csv", "\n".join(lines) + "\n")
    result = {
        "checkpoint_hash": subject.checkpoint_hash,
        "pairs": pair_rows,
        "plot": str(plot),
        "table": str(table_path),
        "path": str(path),
    }
    write_json_atomic(out / "spectra.json", result)
    return StageResult.of(result, [path, plot, table_path, out / "spectra.json"])


def _layer_table(subject: Subject, name: str, layers: list[dict[str, Any]], plot: Path) -> StageResult:
    """A stage's per-layer rows and figure, written as <run>/structure/<name>.json and returned."""
    path = out_dir(subject) / f"{name}.json"
    result = {"checkpoint_hash": subject.checkpoint_hash, "layers": layers, "plot": str(plot), "path": str(path)}
    write_json_atomic(path, result)
    return StageResult.of(result, [plot, path])


@one_blas_thread
def degeneracy_stage(params: Params, subject: Subject) -> StageResult:
    """Activation and gradient Gram spectra of every layer but the logits, and synchronized ReLUs."""
    from kernelscope.structure.plots import gram_spectra

    sp = params.structure
    layers = []
    for layer in subject.layers[:-1]:
        act = gram_spectrum(activation_gram(subject.model, subject.x_fit, layer, sp.chunk_size))
        grad = gram_spectrum(gradient_gram(subject.model, subject.x_fit, layer, sp.chunk_size))
        act_summary = spectrum_summary(act, sp.rank_rtol, sp.mass)
        # A Gram of n points has rank ≤ n: a rank of n says "use more points", not "this many independent directions".
        act_summary["capped_by_points"] = act_summary["rank"] >= len(subject.x_fit)
        row: dict[str, Any] = {
            "layer": layer,
            "activation": act_summary,
            "gradient": spectrum_summary(grad, sp.rank_rtol, sp.mass),
            "activation_eigenvalues": act.tolist(),
            "gradient_eigenvalues": grad.tolist(),
        }
        if is_relu_layer(subject.model, layer):
            groups = firing_groups(relu_activations(subject.model, subject.x_fit, layer, sp.chunk_size))
            row["relu"] = {
                **groups.summary(),
                "groups": groups.synchronized[:20],
                "dead_neurons": groups.dead,
                "always_on_neurons": groups.always_on,
            }
        layers.append(row)
    plot = gram_spectra(
        out_dir(subject) / "gram_spectra.png", layers, f"{subject.name}: degeneracy ({len(subject.x_fit)} points)"
    )
    return _layer_table(subject, "degeneracy", layers, plot)


@one_blas_thread
def interaction_stage(params: Params, subject: Subject) -> StageResult:
    """The interaction basis of every layer but the logits, and ablation curves against PCA on the test split."""
    from kernelscope.structure.plots import ablation_curves

    sp = params.structure
    bases = interaction_bases(subject.model, subject.x_fit, subject.layers, chunk_size=sp.chunk_size, rtol=sp.gram_rtol)
    curves: dict[str, dict[str, dict[str, list]]] = {}
    layers = []
    for layer, basis in bases.items():
        gram, mean = activation_moments(subject.model, subject.x_fit, layer, sp.chunk_size)
        pca: Basis = pca_basis(gram, mean, sp.gram_rtol)
        curves[layer] = {
            b.name: ablation_curve(subject.model, subject.x_eval, subject.y_eval, layer, b, sp.ablation_steps)
            for b in (basis, pca)
        }
        importance = basis.importance
        layers.append(
            {
                "layer": layer,
                "dim": int(basis.forward.shape[1]),
                "whitened_dim": int(len(importance)),
                "interacting_directions": int((importance > sp.rank_rtol**2 * max(importance.max(), 1e-300)).sum()),
                "importance": importance.tolist(),
                "pca_variance": pca.importance.tolist(),
                "needed_interaction": directions_needed(curves[layer]["interaction"]),
                "needed_pca": directions_needed(curves[layer]["pca"]),
                "curves": curves[layer],
            }
        )
    plot = ablation_curves(
        out_dir(subject) / "ablation_curves.png",
        curves,
        f"{subject.name}: accuracy as directions are removed (smallest first)",
    )
    return _layer_table(subject, "interaction_basis", layers, plot)


@one_blas_thread
def coordinate_stage(params: Params, subject: Subject) -> StageResult:
    """Function-preserving reparameterizations: rank measures before and after, neuron-basis measures before and
    after."""
    sp = params.structure
    x = subject.x_fit[: sp.check_points]
    check = coordinate_check(
        subject.model, x, subject.layers, seed=params.seed, chunk_size=sp.chunk_size, rtol=sp.rank_rtol, mass=sp.mass
    )
    path = out_dir(subject) / "coordinate_check.json"
    result = {"checkpoint_hash": subject.checkpoint_hash, **check, "path": str(path)}
    write_json_atomic(path, result)
    return StageResult.of(result, [path])


def sampled_llc(subject_root: Path, checkpoint_hash: str) -> float | None:
    """λ̂ of an SGLD probe-sampling run on this very checkpoint, if one exists beside it."""
    losses, summary = (
        subject_root / "loss_kernel" / "probe_losses.parquet",
        subject_root / "loss_kernel" / "summary.json",
    )
    if not (losses.is_file() and summary.is_file()):
        return None
    provenance = verify_parquet(losses, "probe-losses")
    if provenance.get("checkpoint_hash") != checkpoint_hash:
        return None
    llc = read_json_artifact(summary, "loss-kernel-summary").get("llc")
    if not isinstance(llc, (int, float)):
        raise ArtifactError(f"{summary}: field 'llc' is {llc!r}, not a number; rerun the loss-kernel flow.")
    return float(llc)


def parameter_stage(subject: Subject) -> StageResult:
    """Raw parameter count beside the LLC's effective count 2λ̂ (when a probe-sampling run of this checkpoint exists);
    it writes nothing."""
    return StageResult.of(effective_parameters(subject.model, sampled_llc(subject.root, subject.checkpoint_hash)), [])


def structure_stage(params: Params, name: str, outputs: str | Path) -> StageResult:
    """Every probe on one subject, in one process (the CLI and DVC stage; the flow runs them as separate tasks)."""
    subject = load_subject(params, name, outputs)
    probes = (
        spectra_stage(params, subject),
        degeneracy_stage(params, subject),
        interaction_stage(params, subject),
        coordinate_stage(params, subject),
        parameter_stage(subject),
    )
    summary = structure_summary(subject, *(probe.summary for probe in probes))
    return StageResult.of(summary, [out_dir(subject) / "summary.json"], *probes)
