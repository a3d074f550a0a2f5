"""The attribution flow under Prefect's test harness: a second run is all cache hits."""

import json
import shutil
import time

import pytest
from mlflow.tracking import MlflowClient

from kernelscope.core.params import params_from_dict

pytestmark = pytest.mark.integration


def prefect_artifacts(route: str, **where: list) -> list[dict]:
    """Artifacts from the Prefect REST API: ``route`` "latest/filter" (the newest per key) or "filter"."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    body = {"artifacts": {field: {"any_": values} for field, values in where.items()}}
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/{route}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_second_run_hits_the_cache_and_logs_to_mlflow(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    params = params_from_dict(tiny_params_dict)
    from flows.surrogate import attribution
    from tasks.caching import result_storage

    kwargs = dict(dataset="digits2", params=params, outputs=str(tmp_path / "out"))
    started = time.time_ns()
    first = attribution(**kwargs)
    # The Prefect UI's Artifacts page: the comparison table, the headline summary, the progress bars.
    table_key, summary_key = "attribution-comparison-digits2", "attribution-digits2-summary"
    latest = {a["key"]: a for a in prefect_artifacts("latest/filter", key=[table_key, summary_key])}
    assert latest[table_key]["type"] == "table" and latest[summary_key]["type"] == "markdown"
    rows = json.loads(latest[table_key]["data"])
    assert [row["kernel"] for row in rows] == [s["kind"] for s in first["summaries"]]
    assert rows[0]["τ_K"] == f"{first['summaries'][0]['tau_k']:.3f}"
    assert "best τ_K" in latest[summary_key]["data"] and "report.html" in latest[summary_key]["data"]
    bars = prefect_artifacts("filter", type=["progress"])
    assert any(bar["data"] == 100.0 and bar["description"].startswith("train") for bar in bars), bars
    # Cached results are small records (kernel blocks are never persisted): a second copy of a kernel would be larger.
    records = [p for p in result_storage().rglob("*") if p.is_file() and p.stat().st_mtime_ns >= started]
    assert records, "the flow persisted no result"
    largest = max(records, key=lambda p: p.stat().st_size)
    assert largest.stat().st_size < 64 * 1024, f"{largest}: {largest.stat().st_size} bytes"
    second = attribution(**kwargs)
    # data, train, checkpoint, kernel rows (train, test), kernel writer, kGLM, evaluate, compare; the second run
    # computes no kernel rows (the kernel files verify), its writer is a cache hit
    assert first["tasks"] == 9 and second["tasks"] == 7
    assert first["cache_hits"] == 0
    assert second["cache_hits"] == second["tasks"]
    assert second["summaries"][0]["tau_k"] == first["summaries"][0]["tau_k"]

    # A cached result whose file was deleted is recomputed rather than trusted.
    (tmp_path / "out" / "digits2" / "kglm" / "trntk" / "kglm.safetensors").unlink()
    third = attribution(**kwargs)
    assert third["cache_hits"] == third["tasks"] - 1
    assert (tmp_path / "out" / "digits2" / "kglm" / "trntk" / "kglm.safetensors").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("attribution")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.source = 'prefect' and tags.kernel = 'trntk'"
    )
    assert len(runs) == 3
    comparison = client.search_runs([experiment.experiment_id], filter_string="tags.kernel = 'comparison'")
    description = comparison[0].data.tags["mlflow.note.content"]  # the run page's Markdown description
    assert description.startswith("# attribution: digits2") and "best τ_K" in description
    assert {a.path for a in client.list_artifacts(comparison[0].info.run_id)} >= {
        "comparison.csv",
        "comparison.md",
        "comparison.png",
    }
    run = runs[0]
    assert run.data.metrics["tau_k"] == pytest.approx(first["summaries"][0]["tau_k"])
    assert {"tau_k", "tad", "r_miss", "nn_accuracy", "kglm_accuracy"} <= set(run.data.metrics)
    assert run.data.tags["dataset"] == "digits2" and len(run.data.tags["checkpoint_hash"]) == 64
    assert "probabilities.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    shutil.rmtree(tmp_path / "out")


def test_multi_seed_table_logs_parent_and_children(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    tiny_params_dict["table"] = {"n_models": 3, "archs": ["mlp"], "kind": "trntk"}
    params = params_from_dict(tiny_params_dict)
    from flows.surrogate import faithfulness_table
    from kernelscope.surrogate.aggregate import mean_se

    result = faithfulness_table(params=params, outputs=str(tmp_path / "out"))
    (row,) = result["table"]
    assert row["n_models"] == 3 and row["arch"] == "mlp"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("faithfulness-table")
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    taus = [c.data.metrics["tau_k"] for c in children]
    mean, se = mean_se(taus)
    assert parent.data.metrics["tau_k.digits2.mlp.mean"] == pytest.approx(mean)
    assert parent.data.metrics["tau_k.digits2.mlp.se"] == pytest.approx(se)
    assert len({c.data.tags["seed"] for c in children}) == 3
    assert "| MLP (digits2) | 3 |" in (tmp_path / "out" / "table" / "faithfulness_table.md").read_text()
    (shown,) = prefect_artifacts("latest/filter", key=["faithfulness-table"])
    assert json.loads(shown["data"])[0]["# models"] == "3" and row["tau_k"]["text"] in shown["data"]


def test_forensics_flow_runs_and_logs(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    tiny_params_dict["poison"] = {"kinds": ["trntk"]}
    tiny_params_dict["train"]["hidden"] = [32, 32]
    tiny_params_dict["train"]["epochs"] = 30
    params = params_from_dict(tiny_params_dict)
    from flows.forensics import forensics

    result = forensics(params=params, outputs=str(tmp_path / "out"))
    (row,) = result["rows"]
    assert row["kernel"] == "trntk" and row["precision"] > 0.9
    assert result["tasks"] == 5 and result["n_poisoned"] > 0
    run = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(result["mlflow_run_id"])
    assert run.data.metrics["precision.trntk"] == pytest.approx(row["precision"])
    assert "attack_success_rate" in run.data.metrics
    (shown,) = prefect_artifacts("latest/filter", key=["forensics"])
    (shown_row,) = json.loads(shown["data"])
    assert shown_row["kernel"] == "trntk" and shown_row["precision"] == f"{100 * row['precision']:.2f}"
    again = forensics(params=params, outputs=str(tmp_path / "out"))
    assert again["cache_hits"] == again["tasks"]


def test_loss_kernel_flow_after_attribution(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tiny_params_dict["loss_kernel"] = {
        "chains": 2,
        "draws": 6,
        "burn_in": 4,
        "steps_between": 2,
        "batch_size": 64,
        "umap": False,
    }
    params = params_from_dict(tiny_params_dict)
    from flows.loss_kernel import loss_kernel
    from flows.surrogate import attribution

    attribution(dataset="digits2", params=params, outputs=str(tmp_path / "out"), track=False)
    result = loss_kernel(dataset="digits2", params=params, outputs=str(tmp_path / "out"))
    assert set(result["kglm"]) == {"loss_cov", "loss_corr"}
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result["mlflow_run_id"])
    assert run.data.metrics["llc"] == pytest.approx(result["summary"]["llc"])
    again = loss_kernel(dataset="digits2", params=params, outputs=str(tmp_path / "out"), track=False)
    assert again["cache_hits"] == again["tasks"]


def test_counterfactual_flow_after_attribution(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    import csv

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tiny_params_dict["counterfactual"] = {
        "attributors": ["grad_dot", "kglm:trntk"],
        "m": 4,
        "models_per_stack": 2,
        "projection_dim": 32,
        "bootstrap": 20,
        "brittleness_queries": 2,
        "brittleness_k": [5],
    }
    params = params_from_dict(tiny_params_dict)
    from flows.counterfactual import counterfactual
    from flows.surrogate import attribution

    out = str(tmp_path / "out")
    attribution(dataset="digits2", params=params, outputs=out, track=False)
    result = counterfactual(dataset="digits2", params=params, outputs=out)
    stacks = result["brittleness_stacks"]  # 2 queries x 3 orders (two attributors, random) in stacks of 2
    assert stacks == 3 and result["tasks"] == 2 + 2 + 1 + 1 + stacks + 1 + 1  # blocks, attributors, the table,
    # the brittleness plan, its stacks and table, mislabel detection
    with open(tmp_path / "out/digits2/counterfactual/lds.csv") as handle:
        table = {row["attributor"]: float(row["lds"]) for row in csv.DictReader(handle)}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = {
        client.get_run(i).data.tags["attributor"]: client.get_run(i).data.metrics for i in result["mlflow_run_ids"]
    }
    assert {name: m["lds"] for name, m in logged.items()} == pytest.approx(table, abs=1e-4)
    again = counterfactual(dataset="digits2", params=params, outputs=out, track=False)
    assert again["cache_hits"] == 6 + stacks  # blocks, scores, brittleness stacks and table, mislabel reused; only
    # the cheap tables (LDS, the brittleness plan) are recomputed
    assert "random_flipped_k5" in logged["grad_dot"] and 0 <= logged["grad_dot"]["flipped_k5"] <= 1
    assert 0 <= logged["grad_dot"]["mislabel_auc"] <= 1 and "mislabel_found_top10" in logged["kglm:trntk"]
    assert [r["lds"] for r in again["lds"]] == pytest.approx([r["lds"] for r in result["lds"]])
    (shown,) = prefect_artifacts("latest/filter", key=["counterfactual-digits2"])
    assert {r["attributor"]: float(r["LDS"]) for r in json.loads(shown["data"])} == pytest.approx(table, abs=1e-3)


def test_structure_flow_on_digits_and_the_modular_model(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    from tests.integration.test_dvc_pipeline import TINY_MULTITASK, TINY_STRUCTURE

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tiny_params_dict["loss_kernel"] = {
        "chains": 2,
        "draws": 6,
        "burn_in": 4,
        "steps_between": 2,
        "batch_size": 64,
        "umap": False,
    }
    tiny_params_dict["multitask"] = TINY_MULTITASK
    tiny_params_dict["structure"] = TINY_STRUCTURE
    params = params_from_dict(tiny_params_dict)
    from flows.loss_kernel import loss_kernel
    from flows.structure import structure
    from flows.surrogate import attribution
    from kernelscope.loss_kernel.multitask_stages import multitask_train_stage

    out = str(tmp_path / "out")
    attribution(dataset="digits2", params=params, outputs=out, track=False)
    lk = loss_kernel(dataset="digits2", params=params, outputs=out, track=False)
    result = structure(params=params, subject="digits2", outputs=out)
    summary = result["summary"]
    assert summary["layers"] == ["input", "1", "3", "output"]
    assert summary["coordinate_free_kept"] and "incoming_norm" in summary["neuron_basis_changed"]
    assert summary["parameters"]["effective_parameters"] == pytest.approx(2 * lk["summary"]["llc"])
    for name in (
        "jacobian_spectra.parquet",
        "jacobian_spectra.png",
        "gram_spectra.png",
        "ablation_curves.png",
        "coordinate_check.json",
    ):
        assert (tmp_path / "out" / "digits2" / "structure" / name).is_file()
    run = MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    assert run.data.tags["flow"] == "structure" and run.data.tags["checkpoint_hash"] == summary["checkpoint_hash"]
    assert run.data.metrics["jacobian.input_to_1.rank_stacked"] == result["spectra"]["pairs"][0]["rank_stacked"]
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(result["mlflow_run_id"])}
    assert {"jacobian_spectra.png", "ablation_curves.png", "coordinate_check.json", "effective_ranks.csv"} <= artifacts
    again = structure(params=params, subject="digits2", outputs=out, track=False)
    assert again["cache_hits"] == again["tasks"] == 4
    shown = {
        a["key"]: a for a in prefect_artifacts("latest/filter", key=["structure-digits2", "structure-digits2-summary"])
    }
    assert [r["layer"] for r in json.loads(shown["structure-digits2"]["data"])] == ["input", "1", "3"]
    assert "ranks kept" in shown["structure-digits2-summary"]["data"]

    # The modular transformer: integer inputs, so the probes start at its residual stream; no SGLD run, so no LLC.
    multitask_train_stage(params, tmp_path / "out" / "multitask")
    modular = structure(params=params, subject="multitask", outputs=out, track=False)
    assert modular["summary"]["layers"] == ["resid_mid", "act", "output"]
    assert "effective_parameters" not in modular["parameters"] and modular["parameters"]["raw_parameters"] > 0
    assert [row["layer"] for row in modular["interaction"]["layers"]] == ["resid_mid", "act"]


def test_loss_kernel_sweep_flow_heat_maps_verdicts_and_mlflow(prefect_harness, tmp_path, tiny_params_dict, monkeypatch):
    import json

    from flows.loss_kernel_sweep import loss_kernel_sweep
    from kernelscope.loss_kernel.multitask_stages import multitask_loss_stage
    from kernelscope.loss_kernel.sweep import Cell, cell_params
    from tests.integration.test_dvc_pipeline import TINY_MULTITASK

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tiny_params_dict["multitask"] = {**TINY_MULTITASK, "epsilon": 1e-4, "gamma": 1000.0, "nbeta": 20.0}
    # ε 10 with γ 1000 overshoots w* by a factor 5000 a step: a diverging cell, reported and not fatal
    tiny_params_dict["loss_kernel_sweep"] = {
        "seeds": [0, 1],
        "epsilon": [1e-4, 10.0],
        "gamma": [1000.0],
        "nbeta": [20.0],
    }
    params = params_from_dict(tiny_params_dict)
    out = tmp_path / "out"
    result = loss_kernel_sweep(params=params, outputs=str(out))
    report = result["report"]
    assert result["tasks"] == 2 + 2 * 2 + 1
    root = out / "multitask" / "sweep"
    written = json.loads((root / "sweep.json").read_text())
    assert written["robust_fraction"] == pytest.approx(report["robust_fraction"])
    for seed in ("0", "1"):
        cells = {c["epsilon"]: c for c in report["seeds"][seed]["cells"]}
        assert (
            cells[10.0]["task_auc"] is None and not cells[10.0]["healthy"] and "diverged" in cells[10.0]["warnings"][0]
        )
        robust = [c["healthy"] and c["task_auc"] >= 0.9 for c in cells.values() if c["task_auc"] is not None]
        assert report["seeds"][seed]["robust_fraction"] == sum(robust) / 2
        assert report["seeds"][seed]["default_auc"] == cells[1e-4]["task_auc"]
        assert (root / f"heatmap_seed{seed}.png").is_file()
    assert report["default_min_auc"] == min(report["seeds"][s]["default_auc"] for s in ("0", "1"))
    # A cell is the multitask stage at that setting: the same AUC and LLC from the same model
    stage = multitask_loss_stage(cell_params(params, 1, Cell(1e-4, 1000.0, 20.0)), root / "seed1").summary
    cell = next(c for c in report["seeds"]["1"]["cells"] if c["epsilon"] == 1e-4)
    assert (cell["task_auc"], cell["llc"]) == (stage["task_auc"], stage["llc"])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("loss-kernel-sweep").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_id for r in parents) == sorted(result["mlflow_run_ids"]) and len(runs) == 2 + 4
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") and r.data.params["epsilon"] == "0.0001")
    assert child.data.tags["healthy"] in ("true", "false") and "task_auc" in child.data.metrics
    again = loss_kernel_sweep(params=params, outputs=str(out), track=False)
    assert again["cache_hits"] == again["tasks"] == result["tasks"]
