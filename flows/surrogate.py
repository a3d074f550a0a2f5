"""The NTK-surrogate flows: attribution (data → model → kernels → kGLM → faithfulness, logged to MLflow),
explain (one input through every kernel's surrogate) and the multi-seed faithfulness table (the paper's Table 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.sections import kglm_sections, source_hash
from flows.summary_tables import comparison_table, multi_seed_table
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.layout import RunLayout
from kernelscope.core.param_types import DatasetName
from kernelscope.core.params import Params, params_hash
from kernelscope.core.stage_reads import stage_sections
from kernelscope.core.tracking import RunTags, log_parent_with_children
from kernelscope.data.datasets import read_dataset
from kernelscope.surrogate.explain import Query, load_inputs, track_explain
from kernelscope.surrogate.stages import track_attribution
from kernelscope.surrogate.table import METRICS, seed_table, write_table
from tasks.artifacts import publish_results
from tasks.fanout import Fanout
from tasks.surrogate import (
    assemble_kernels,
    compare_kernels,
    evaluate,
    explain_input,
    load_checkpoint,
    prepare_data,
    seed_run,
    train_kglm,
    train_model,
    train_seed_models,
    write_report,
)


@flow(name="attribution", log_prints=False)
def attribution(
    params: Params, dataset: DatasetName = "digits2", outputs: str | None = None, track: bool = True
) -> dict[str, Any]:
    """Explain one dataset's model through its NTK surrogate(s) and log the faithfulness metrics.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        dataset: the bundled dataset to train on and explain.
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    root = str(RunLayout.at(outputs or params.outputs, dataset).root)
    kinds = params.kernel.kinds
    with Fanout(params.scale) as fan:
        fingerprint = source_hash(params, dataset)
        data = fan.run(
            prepare_data,
            sections=stage_sections(params, "data", dataset),
            dataset=dataset,
            root=root,
            source_hash=fingerprint,
        )
        trained = fan.run(
            train_model,
            sections=stage_sections(params, "train", dataset),
            root=root,
            dataset_hash=data.summary["dataset_hash"],
            source_hash=fingerprint,
        )
        checkpoint_hash = trained.summary["checkpoint_hash"]
        ckpt = fan.run(
            load_checkpoint,
            sections=stage_sections(params, "load_checkpoint", dataset),
            root=root,
            checkpoint_hash=checkpoint_hash,
            dataset_hash=data.summary["dataset_hash"],
        )
        accuracy = ckpt.summary["metrics"]["test_accuracy"]
        logger.info(
            "%s: NN test accuracy %.4f; %d kernels, runner %s", dataset, accuracy, len(kinds), params.scale.runner
        )
        kernels = assemble_kernels(fan, params, root, kinds, checkpoint_hash, dataset)
        fitted = fan.map(
            train_kglm,
            [
                dict(
                    sections=kglm_sections(params, kind, dataset),
                    root=root,
                    kind=kind,
                    kernel_train=kernels[kind].summary["train"],
                    checkpoint_hash=kernels[kind].summary["checkpoint_hash"],
                )
                for kind in kinds
            ],
        )
        evaluated = fan.map(
            evaluate,
            [
                dict(
                    sections=kglm_sections(params, kind, dataset),
                    root=root,
                    kind=kind,
                    kglm_sha256=f.summary["kglm_sha256"],
                    checkpoint_hash=checkpoint_hash,
                )
                for kind, f in zip(kinds, fitted)
            ],
        )
        summaries = [e.summary for e in evaluated]
        for s in summaries:
            logger.info("%s/%s: tau_K %.3f  TAD %+.2f", dataset, s["kind"], s["tau_k"], s["tad"])
        comparison = fan.run(
            compare_kernels, sections=stage_sections(params, "compare_kernels", dataset), root=root, summaries=summaries
        )
    report = write_report(root=root, table_dir=None, summaries=summaries)
    artifacts = [*comparison.summary["artifacts"], report["path"]]
    run_ids = track_attribution(params, summaries, comparison_artifacts=artifacts) if track else []
    run = fan.ledger
    logger.info("%s: %d of %d tasks were cache hits", dataset, run.hits, run.runs)
    result = {
        "dataset": dataset,
        "summaries": summaries,
        "comparison": comparison.summary["table"],
        "report": report["path"],
        "cache_hits": run.hits,
        "tasks": run.runs,
        "mlflow_run_ids": run_ids,
    }
    best = max(summaries, key=lambda s: s["tau_k"])
    publish_results(
        "attribution",
        dataset,
        [comparison_table(dataset, result)],
        {"NN test accuracy": accuracy, f"best τ_K ({best['kind']})": best["tau_k"], "its TAD": best["tad"]},
        report=report["path"],
        experiment="attribution",
        run_ids=dict(zip([*kinds, "comparison"], run_ids)),
    )
    return result


@flow(name="explain")
def explain_flow(
    params: Params,
    dataset: DatasetName = "digits10",
    index: int | None = 0,
    input_file: str | None = None,
    top_k: int = 5,
    outputs: str | None = None,
    track: bool = True,
) -> dict[str, Any]:
    """Run after the attribution flow: predictions, top-k similar and attributed training points, pictures.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        dataset: whose attribution run explains the input.
        index: a test point of that run (ignored when input_file is given).
        input_file: a new input, .npz (array 'x') or .parquet (column 'features'); read without unpickling.
        top_k: training points listed per kernel and logit.
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    layout = RunLayout.at(outputs or params.outputs, dataset)
    ds = read_dataset(layout.data_dir)
    if input_file:
        query = Query(Path(input_file).stem, load_inputs(input_file, ds.train.x.shape[1])[0], None, None)
    elif index is not None and 0 <= index < len(ds.test.y):
        query = Query(f"test-{index}", ds.test.x[index], int(ds.test.y[index]), index)
    else:
        raise KernelscopeError(
            f"explain: index {index} is out of range for the {len(ds.test.y)} test points of {dataset}; "
            "pass index or input_file."
        )
    kinds = list(params.kernel.kinds)
    result = explain_input(params, str(layout.root), kinds, query, top_k)
    get_run_logger().info(
        "explained %s: NN predicts %d; report %s", query.name, result["nn_prediction"], result["report"]
    )
    if track:
        track_explain(params, dataset, query.name, kinds, top_k, result)
    return result


@flow(name="faithfulness-table")
def faithfulness_table(params: Params, outputs: str | None = None, track: bool = True) -> dict[str, Any]:
    """Train table.n_models seeded models per dataset and architecture; aggregate τ_K, TAD, R_Miss, accuracy.

    Args:
        params: every setting of the run (params.yaml's sections; the form starts from params.yaml).
        outputs: folder for the run's artifacts; empty: params.outputs.
        track: log metrics, tags and plots to MLflow.
    """
    logger = get_run_logger()
    root = Path(outputs or params.outputs) / "table"
    tp = params.table
    with Fanout(params.scale) as fan:
        jobs, job_datasets = [], []
        for dataset in params.datasets:
            data = fan.run(
                prepare_data,
                sections=stage_sections(params, "data", dataset),
                dataset=dataset,
                root=str(root / dataset),
                source_hash=source_hash(params, dataset),
            ).summary
            seeds = list(range(params.seed + 1, params.seed + 1 + tp.n_models))
            shared = dict(data_dir=str(root / dataset / "data"), data_seed=params.seed)
            for arch in tp.archs:
                roots = [str(root / dataset / f"{arch}-seed{seed}") for seed in seeds]
                sections = stage_sections(params, "seed_models", dataset)
                job = dict(sections=sections, arch=arch, seeds=seeds, roots=roots, dataset_hash=data["dataset_hash"])
                jobs.append({**job, **shared})
                job_datasets.append(dataset)
        # Every row's models first (each row's seeds in one stack where that is exact), then the seeds' kernels
        trained = [result.summary["trained"] for result in fan.map(train_seed_models, jobs)]
        runs = [
            dict(
                sections=stage_sections(params, "seed_run", dataset),
                arch=job["arch"],
                seed=seed,
                kind=tp.kind,
                root=root_k,
                data_dir=job["data_dir"],
                data_seed=job["data_seed"],
                trained=summary,
            )
            for dataset, job, summaries in zip(job_datasets, jobs, trained)
            for seed, root_k, summary in zip(job["seeds"], job["roots"], summaries)
        ]
        rows = [row.summary for row in fan.map(seed_run, runs)]
    logger.info("%d seed runs, %d from cache", len(rows), fan.ledger.hits)
    table = seed_table(rows)
    artifacts = write_table(table, root)
    for t in table:
        logger.info(
            "%s %s (%d seeds): tau_K %s  TAD %s  NN acc %s",
            t["dataset"],
            t["arch"],
            t["n_models"],
            t["tau_k"]["text"],
            t["tad"]["text"],
            t["nn_accuracy"]["text"],
        )
    run_id = None
    if track:
        metrics = {
            f"{key}.{t['dataset']}.{t['arch']}.{stat}": t[key][stat]
            for t in table
            for key, _, _, _ in METRICS
            for stat in ("mean", "se")
        }
        children = [
            {
                "name": f"{r['dataset']}-{r['arch']}-seed{r['seed']}",
                "params": {"dataset": r["dataset"], "arch": r["arch"], "seed": r["seed"], "kernel": r["kind"]},
                "metrics": {k: r[k] for k in ("tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy")},
                "tags": {
                    "dataset": r["dataset"],
                    "arch": r["arch"],
                    "seed": str(r["seed"]),
                    "checkpoint_hash": r["checkpoint_hash"],
                },
                "artifacts": [r["plot"]],
            }
            for r in rows
        ]
        tags = RunTags(
            "faithfulness-table",
            ",".join(params.datasets),
            tp.kind,
            params.seed,
            params_hash(params),
            {"n_models": str(tp.n_models)},
        )
        run_id = log_parent_with_children(
            "faithfulness-table",
            f"table-{tp.n_models}-seeds",
            tags=tags,
            params={"table": tp.model_dump(mode="json"), "kglm": params.kglm.model_dump(mode="json")},
            metrics=metrics,
            artifacts=artifacts,
            children=children,
        )
    result = {"table": table, "artifacts": artifacts, "mlflow_run_id": run_id}
    publish_results(
        "faithfulness-table",
        ",".join(params.datasets),
        [multi_seed_table(params, result)],
        {f"τ_K {t['arch']} ({t['dataset']})": t["tau_k"]["text"] for t in table},
        experiment="faithfulness-table",
        run_ids={"parent run": run_id} if run_id else None,
    )
    return result
