"""The structure flow: coordinate-free Jacobian rank, degeneracy and the interaction basis of a checkpoint."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.summary_tables import structure_table
from kernelscope.core.param_types import StructureSubject
from kernelscope.core.params import Params
from kernelscope.core.stage_reads import stage_sections, structure_stage
from tasks.artifacts import publish_results
from tasks.fanout import Fanout
from tasks.structure import coordinate_check, degeneracy, interaction_basis, layer_spectra


def checkpoint_hash_of(params: Params, subject: str, outputs: str) -> str:
    from kernelscope.structure.subjects import load_subject

    return load_subject(params, subject, outputs).checkpoint_hash


@flow(name="structure")
def structure(
    params: Params, subject: StructureSubject = "digits10", outputs: str | None = None, track: bool = True
) -> dict[str, Any]:
    """Structure probes of one model: layer-Jacobian spectra and effective ranks, their invariance under
    function-preserving reparameterizations, degeneracy (Gram spectra, synchronized ReLUs, LLC effective
    parameters) and the interaction basis with ablation curves against PCA. Run attribution (digits) or
    loss-kernel-multitask (modular) first; run loss-kernel first to see the LLC beside the parameter count.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        subject: a dataset's attribution-run model, or 'multitask' (the multitask model).
        outputs: folder holding the runs; empty: params.outputs.
        track: log metrics, tags, plots and tables to MLflow.
    """
    from kernelscope.structure.stages import parameter_stage
    from kernelscope.structure.subjects import load_subject
    from kernelscope.structure.summary import structure_summary, track_structure

    logger = get_run_logger()
    out = str(outputs or params.outputs)
    loaded = load_subject(params, subject, out)
    job = dict(
        sections=stage_sections(params, structure_stage(subject), subject),
        subject=subject,
        outputs=out,
        checkpoint_hash=loaded.checkpoint_hash,
    )
    with Fanout(params.scale) as fan:
        pending = [fan.submit(t, **job) for t in (layer_spectra, degeneracy, interaction_basis, coordinate_check)]
        spectra, degenerate, interaction, coordinates = (fan.result(p).summary for p in pending)
    parameters = parameter_stage(loaded).summary  # not cached: a loss-kernel run may have appeared since
    summary = structure_summary(loaded, spectra, degenerate, interaction, coordinates, parameters)
    for p in spectra["pairs"]:
        logger.info(
            "%s %s→%s: rank %d (stacked), 99%% mass %d, participation %.1f; per point %.1f",
            subject,
            p["source"],
            p["target"],
            p["rank_stacked"],
            p["rank_mass_stacked"],
            p["participation_stacked"],
            p["rank_per_point_mean"],
        )
    for row in interaction["layers"]:
        logger.info(
            "%s layer %s: 99%% of accuracy with %d interaction-basis directions vs %d PCA directions",
            subject,
            row["layer"],
            row["needed_interaction"],
            row["needed_pca"],
        )
    if not summary["coordinate_free_kept"]:
        logger.warning(
            "%s: a rank measure moved beyond the reparameterization's condition-number band; see coordinate_check.json",
            subject,
        )
    run_id = track_structure(params, summary) if track else None
    result = {
        "summary": summary,
        "spectra": spectra,
        "degeneracy": degenerate,
        "interaction": interaction,
        "coordinates": coordinates,
        "parameters": parameters,
        "cache_hits": fan.ledger.hits,
        "tasks": fan.ledger.runs,
        "mlflow_run_id": run_id,
    }
    publish_results(
        "structure",
        subject,
        [structure_table({subject: result})],
        {
            "layers": len(spectra["pairs"]) + 1,
            "parameters": parameters["raw_parameters"],
            "coordinate check": "ranks kept" if summary["coordinate_free_kept"] else "a rank moved",
        },
        experiment="structure",
        run_ids={subject: run_id} if run_id else None,
    )
    return result
