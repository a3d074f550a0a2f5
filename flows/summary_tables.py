"""The flows' result tables, built once from their results and shown on the console, on the Prefect UI's
Artifacts page, in docs/results.md (through infra/docs_results.py) and in the main job's JSON record."""

from __future__ import annotations

import math
from typing import Any

from kernelscope.core.params import Params
from kernelscope.core.tables import SummaryTable
from kernelscope.surrogate.table import METRICS


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def comparison_table(dataset: str, result: dict[str, Any], seconds: float | None = None) -> SummaryTable:
    """One attribution run: each kernel's kGLM accuracy, TAD, τ_K and R_Miss."""
    first = result["summaries"][0]
    timing = "" if seconds is None else f"{seconds:.1f} s, "
    return SummaryTable(
        f"attribution-comparison-{dataset}",
        f"{dataset}: kernel comparison — NN test accuracy {100 * first['nn_accuracy']:.2f}%, {timing}"
        f"{result['cache_hits']}/{result['tasks']} tasks from cache",
        ["kernel", "kGLM test acc", "TAD (pts)", "τ_K", "R_Miss"],
        [
            [
                s["kind"],
                fmt(100 * s["kglm_accuracy"], ".2f"),
                fmt(s["tad"], "+.2f"),
                fmt(s["tau_k"], ".3f"),
                fmt(s["r_miss"], ".3f"),
            ]
            for s in result["summaries"]
        ],
    )


def _key(name: str, runs: dict[str, Any]) -> str:
    """A table of one run is keyed by its dataset or subject, a table of several (the main job's) by the name alone."""
    return name if len(runs) > 1 else f"{name}-{next(iter(runs))}"


def _seconds(seconds: float | None) -> str:
    return "" if seconds is None else f"; {seconds:.0f} s"


def multi_seed_table(params: Params, result: dict[str, Any], seconds: float | None = None) -> SummaryTable:
    """The multi-seed faithfulness table (the paper's Table 1)."""
    return SummaryTable(
        "faithfulness-table",
        f"Multi-seed faithfulness ({params.table.kind}, {params.table.n_models} seeds × "
        f"{list(params.table.archs)}, mean(SE) over seeds{_seconds(seconds)}). "
        "Paper (MNIST2): MLP τ_K 0.708(3), CNN τ_K 0.857(7)",
        ["model (dataset)", "# models", *(label for _, label, _, _ in METRICS)],
        [
            [
                f"{row['arch'].upper()} ({row['dataset']})",
                str(row["n_models"]),
                *(row[k]["text"] for k, _, _, _ in METRICS),
            ]
            for row in result["table"]
        ],
    )


def forensics_table(params: Params, found: dict[str, Any], seconds: float | None = None) -> SummaryTable:
    """BadNets detection by nearest training points and trace-back (the paper's Table 3)."""
    p = params.poison
    return SummaryTable(
        "forensics",
        f"Forensics ({p.dataset}, {found['n_poisoned']} poisoned training points; clean test accuracy "
        f"{100 * found['clean_test_accuracy']:.2f}%, attack success {100 * found['attack_success_rate']:.2f}%"
        f"{_seconds(seconds)}). Flag: ≥{p.m} of the {p.k} nearest training points poisoned",
        ["kernel", "precision", "recall", "τ_K", "poi. τ_K", "trace-back P=R"],
        [
            [
                row["kernel"],
                fmt(100 * row["precision"], ".2f"),
                fmt(100 * row["recall"], ".2f"),
                fmt(row["clean_tau_k"], ".3f"),
                fmt(row["poisoned_tau_k"], ".3f"),
                fmt(100 * row["trace_precision"], ".2f"),
            ]
            for row in found["rows"]
        ],
    )


def loss_kernel_table(runs: dict[str, dict[str, Any]], seconds: float | None = None) -> SummaryTable:
    """Per dataset: the LLC, label agreement and lift under the loss correlation, the kGLM on it."""
    rows = []
    for dataset, lk in runs.items():
        s = lk["summary"]
        rows.append(
            [
                dataset,
                f"{s['llc']:.3f}",
                f"{s['label_agreement']:.3f}",
                f"{s['label_base_rate']:.3f}",
                f"{s['label_lift']:.2f}",
                fmt(s.get("taxonomic_lift", float("nan")), ".2f"),
                fmt(100 * lk["kglm"]["loss_corr"]["kglm_accuracy"], ".2f"),
                str(len(s["warnings"])),
            ]
        )
    warnings = [f"{dataset}: SGLD health: {w}" for dataset, lk in runs.items() for w in lk["summary"]["warnings"]]
    return SummaryTable(
        _key("loss-kernel", runs),
        f"Loss kernel (SGLD around each dataset's MLP{_seconds(seconds)}; "
        "kGLM on loss kernels uses the test labels through the losses)",
        [
            "dataset",
            "LLC λ̂",
            "label agreement@10",
            "base rate",
            "lift",
            "taxonomic lift",
            "kGLM acc (loss_corr)",
            "warnings",
        ],
        rows,
        warnings,
    )


def multitask_table(params: Params, mt: dict[str, Any], seconds: float | None = None) -> SummaryTable:
    """The multitask validation: accuracies, task separation by the first component, the task contrast."""
    acc, ms = mt["accuracy"], mt["summary"]
    rows = [
        ["test accuracy, addition / division", f"{100 * acc['test_add']:.1f}% / {100 * acc['test_div']:.1f}%"],
        ["task separation ROC-AUC (the paper: 0.931)", fmt(ms["task_auc"], ".3f")],
        ["ROC-AUC, each chain centred", fmt(ms["task_auc_within_chain"], ".3f")],
        [
            "mean loss correlation within add / div",
            f"{fmt(ms.get('within_add_corr'), '.4f')} / {fmt(ms.get('within_div_corr'), '.4f')}",
        ],
        ["mean loss correlation across the tasks", fmt(ms.get("across_corr"), ".4f")],
        ["task contrast z (200 label shufflings)", fmt(ms.get("task_contrast_z"), ".1f")],
        [
            f"division a = 0 probes ({ms['n_trivial_probes']}): correlation among them / to the rest",
            f"{fmt(ms.get('trivial_within_corr'), '.2f')} / {fmt(ms.get('trivial_to_others_corr'), '.2f')}",
        ],
        ["SGLD step ε", f"{ms.get('epsilon', params.multitask.epsilon):g}"],
        ["SGLD health warnings", str(len(ms["warnings"]))],
    ]
    return SummaryTable(
        "loss-kernel-multitask",
        f"Multitask loss kernel (modular addition and division, p = {params.multitask.p}{_seconds(seconds)})",
        ["quantity", "value"],
        rows,
        [f"SGLD health: {warning}" for warning in ms["warnings"]],
    )


def counterfactual_table(
    params: Params, dataset: str, summary: dict[str, Any], seconds: float | None = None
) -> SummaryTable:
    """Every attributor's LDS with its 95% interval, cost, brittleness at the largest k and mislabel detection's
    ROC-AUC."""
    cf = params.counterfactual
    k = max(cf.brittleness_k)
    flips = {r["attributor"]: r["flipped"] for r in summary.get("brittleness", []) if r["k"] == k}
    found = {r["attributor"]: r for r in summary.get("mislabel", [])}
    rows = []
    for row in summary["lds"]:
        flip = flips.get(row["attributor"])
        rows.append(
            [
                row["attributor"],
                fmt(row["lds"], ".3f"),
                f"[{fmt(row['ci_low'], '.3f')}, {fmt(row['ci_high'], '.3f')}]",
                fmt(row["seconds"], ".2f"),
                "–" if flip is None else f"{flip:.2f} (random {flips.get('random', float('nan')):.2f})",
                _mislabel_cell(found.get(row["attributor"])),
            ]
        )
    return SummaryTable(
        f"counterfactual-{dataset}",
        f"{dataset}: LDS over m = {cf.m} retrained models on α = {cf.alpha} subsets{_seconds(seconds)}",
        ["attributor", "LDS", "95% CI", "seconds", f"flipped, top {k} removed", "mislabel AUC [95% CI]"],
        rows,
    )


def _mislabel_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    return f"{fmt(row['auc'], '.3f')} [{fmt(row['ci_low'], '.3f')}, {fmt(row['ci_high'], '.3f')}]"


def structure_table(runs: dict[str, Any], seconds: float | None = None) -> SummaryTable:
    """Per model: each layer pair's Jacobian rank, degeneracy per layer, ablation against PCA,
    parameters against 2λ̂."""
    rows = []
    for subject, run in runs.items():
        pairs, layers = run["spectra"]["pairs"], run["degeneracy"]["layers"]
        ablation = {row["layer"]: row for row in run["interaction"]["layers"]}
        for i, (pair, layer) in enumerate(zip(pairs, layers)):
            relu = layer.get("relu")
            rows.append(
                [
                    subject if i == 0 else "",
                    f"{pair['source']} → {pair['target']} {pair['shape'][0]}×{pair['shape'][1]}",
                    f"{pair['rank_stacked']} / {pair['rank_mass_stacked']} / {pair['participation_stacked']:.1f}",
                    layer["layer"],
                    f"{layer['activation']['degenerate_directions']}"
                    f"{'*' if layer['activation'].get('capped_by_points') else ''} / "
                    f"{layer['gradient']['degenerate_directions']}",
                    f"{relu['dead']}/{relu['always_on']}/{relu['sync_neurons']}" if relu else "–",
                    f"{ablation[layer['layer']]['needed_interaction']} vs {ablation[layer['layer']]['needed_pca']}",
                ]
            )
    notes = []
    for subject, run in runs.items():
        p, s = run["parameters"], run["summary"]
        llc = (
            f"LLC λ̂ {p['llc']:.4g}: effective parameters 2λ̂ = {p['effective_parameters']:.4g} of {p['raw_parameters']}"
            if "llc" in p
            else f"{p['raw_parameters']} parameters (no SGLD run of this checkpoint for the LLC)"
        )
        kept = "ranks kept" if s["coordinate_free_kept"] else "a rank moved beyond its bound"
        notes.append(
            f"{subject}: {llc}; coordinate check (permutation, positive scaling): {kept}, "
            f"neuron-basis measures changed: {', '.join(s['neuron_basis_changed']) or 'none'}"
        )
    return SummaryTable(
        _key("structure", runs),
        f"Structure probes{'' if seconds is None else f' ({seconds:.0f} s)'}: layer Jacobian rank "
        "(stacked over points) / 99% mass / "
        "participation; per layer: degenerate activation and gradient directions, dead / always-on / "
        "synchronized ReLUs, directions for 99% of test accuracy (interaction basis vs PCA); "
        "* activation rank capped by structure.points",
        [
            "model",
            "layer pair",
            "rank / 99% / PR",
            "layer",
            "degenerate act / grad",
            "ReLU dead/on/sync",
            "ablation LIB vs PCA",
        ],
        rows,
        notes,
    )


def summary_tables(params: Params, results: dict[str, Any]) -> list[SummaryTable]:
    """Every table of the main job, in the order it prints them."""
    elapsed = results["elapsed"]
    return [
        *(comparison_table(d, results["attribution"][d], elapsed[f"attribution-{d}"]) for d in params.datasets),
        multi_seed_table(params, results["table"], elapsed["table"]),
        forensics_table(params, results["forensics"], elapsed["forensics"]),
        loss_kernel_table(results["loss_kernel"], elapsed["loss-kernel"]),
        multitask_table(params, results["multitask"], elapsed["multitask"]),
        structure_table(results["structure"], elapsed["structure"]),
        *(counterfactual_table(params, d, run) for d, run in results["counterfactual"].items()),
    ]
