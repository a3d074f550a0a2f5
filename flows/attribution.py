"""The attribution flow: data → model → checkpoint → kernels → kGLM → faithfulness, logged to MLflow."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from kernelscope.params import Params, load_params
from kernelscope.pipeline import RunLayout, track_attribution
from tasks.attribution import assemble_kernel, compare_kernels, evaluate, load_checkpoint, prepare_data, train_kglm, train_model, write_report
from tasks.caching import CacheLedger


def sections(params: Params, *names: str) -> dict[str, Any]:
    """The parts of params a task reads: its cache key changes only when they do."""
    dumped = params.model_dump(mode="json")
    return {name: dumped[name] for name in names}


def kernel_sections(params: Params, kind: str) -> dict[str, Any]:
    """Kernel params, minus the options that cannot change this kind (so they do not bust its cache)."""
    picked = sections(params, "seed", "device", "kernel")
    kernel = dict(picked["kernel"])
    kernel.pop("kinds")
    if not kind.startswith("proj_"):
        for key in ("projection", "projection_dim"):
            kernel.pop(key)
        picked.pop("seed")
    if kind != "em":
        kernel.pop("em_layers")
    return {**picked, "kernel": kernel}


@flow(name="attribution", log_prints=False)
def attribution(dataset: str = "digits2", params_path: str = "params.yaml", outputs: str | None = None,
                track: bool = True) -> dict[str, Any]:
    """Explain one dataset's model through its NTK surrogate(s) and log the faithfulness metrics."""
    logger = get_run_logger()
    params = load_params(params_path)
    root = str(RunLayout.at(outputs or params.outputs, dataset).root)
    run = CacheLedger()

    data = run(prepare_data, sections=sections(params, "seed", "data"), dataset=dataset, root=root)
    trained = run(train_model, sections=sections(params, "seed", "train", "cnn"), root=root, dataset_hash=data["dataset_hash"])
    ckpt = run(load_checkpoint, root=root, checkpoint_hash=trained["checkpoint_hash"], dataset_hash=data["dataset_hash"])
    logger.info("%s: NN test accuracy %.4f", dataset, ckpt["metrics"]["test_accuracy"])
    summaries = []
    for kind in params.kernel.kinds:
        kernel = run(assemble_kernel, sections=kernel_sections(params, kind), root=root, kind=kind,
                     checkpoint_hash=trained["checkpoint_hash"])
        fitted = run(train_kglm, sections=sections(params, "seed", "kglm"), root=root, kind=kind,
                     kernel_train=kernel["train"], checkpoint_hash=kernel["checkpoint_hash"])
        summaries.append(run(evaluate, root=root, kind=kind, kglm_sha256=fitted["kglm_sha256"],
                             checkpoint_hash=kernel["checkpoint_hash"]))
        logger.info("%s/%s: tau_K %.3f  TAD %+.2f", dataset, kind, summaries[-1]["tau_k"], summaries[-1]["tad"])
    comparison = run(compare_kernels, root=root, summaries=summaries)
    report = write_report(root=root, table_dir=None, summaries=summaries)
    artifacts = [*comparison["artifacts"], report["path"]]
    run_ids = track_attribution(params, summaries, source="prefect", comparison_artifacts=artifacts) if track else []
    logger.info("%s: %d of %d tasks were cache hits", dataset, run.hits, run.runs)
    return {"dataset": dataset, "summaries": summaries, "comparison": comparison["table"], "report": report["path"], "cache_hits": run.hits,
            "tasks": run.runs, "mlflow_run_ids": run_ids}
