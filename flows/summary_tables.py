"""The main job's console tables of the counterfactual evaluation and the structure probes."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from kernelscope.core.params import Params


def fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_counterfactual(console: Console, params: Params, runs: dict[str, Any], elapsed: float) -> None:
    """Per dataset, every attributor's LDS with its 95% interval, cost, brittleness at the largest k and mislabel
    detection's ROC-AUC."""
    cf = params.counterfactual
    k = max(cf.brittleness_k)
    for dataset, summary in runs.items():
        flips = {r["attributor"]: r["flipped"] for r in summary.get("brittleness", []) if r["k"] == k}
        found = {r["attributor"]: r for r in summary.get("mislabel", [])}
        table = Table(
            title=f"{dataset}: LDS over m = {cf.m} retrained models on α = {cf.alpha} subsets ({elapsed:.0f} s)"
        )
        columns = ("attributor", "LDS", "95% CI", "seconds", f"flipped, top {k} removed", "mislabel AUC [95% CI]")
        for column in columns:
            table.add_column(column)
        for row in summary["lds"]:
            flip = flips.get(row["attributor"])
            table.add_row(
                row["attributor"],
                fmt(row["lds"], ".3f"),
                f"[{fmt(row['ci_low'], '.3f')}, {fmt(row['ci_high'], '.3f')}]",
                fmt(row["seconds"], ".2f"),
                "–" if flip is None else f"{flip:.2f} (random {flips.get('random', float('nan')):.2f})",
                _mislabel_cell(found.get(row["attributor"])),
            )
        console.print(table)


def _mislabel_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    return f"{fmt(row['auc'], '.3f')} [{fmt(row['ci_low'], '.3f')}, {fmt(row['ci_high'], '.3f')}]"


def print_structure(console: Console, runs: dict[str, Any], elapsed: float) -> None:
    """Per model: each layer pair's Jacobian rank, degeneracy per layer, ablation against PCA,
    parameters against 2λ̂."""
    table = Table(
        title=f"Structure probes ({elapsed:.0f} s): layer Jacobian rank (stacked over points) / 99% mass / "
        "participation; per layer: degenerate activation and gradient directions, dead / always-on / "
        "synchronized ReLUs, directions for 99% of test accuracy (interaction basis vs PCA); "
        "* activation rank capped by structure.points"
    )
    for column in (
        "model",
        "layer pair",
        "rank / 99% / PR",
        "layer",
        "degenerate act / grad",
        "ReLU dead/on/sync",
        "ablation LIB vs PCA",
    ):
        table.add_column(column)
    for subject, run in runs.items():
        pairs, layers = run["spectra"]["pairs"], run["degeneracy"]["layers"]
        ablation = {row["layer"]: row for row in run["interaction"]["layers"]}
        for i, (pair, layer) in enumerate(zip(pairs, layers)):
            relu = layer.get("relu")
            table.add_row(
                subject if i == 0 else "",
                f"{pair['source']} → {pair['target']} {pair['shape'][0]}×{pair['shape'][1]}",
                f"{pair['rank_stacked']} / {pair['rank_mass_stacked']} / {pair['participation_stacked']:.1f}",
                layer["layer"],
                f"{layer['activation']['degenerate_directions']}"
                f"{'*' if layer['activation'].get('capped_by_points') else ''} / "
                f"{layer['gradient']['degenerate_directions']}",
                f"{relu['dead']}/{relu['always_on']}/{relu['sync_neurons']}" if relu else "–",
                f"{ablation[layer['layer']]['needed_interaction']} vs {ablation[layer['layer']]['needed_pca']}",
            )
    console.print(table)
    for subject, run in runs.items():
        p, s = run["parameters"], run["summary"]
        llc = (
            f"LLC λ̂ {p['llc']:.4g}: effective parameters 2λ̂ = {p['effective_parameters']:.4g} of {p['raw_parameters']}"
            if "llc" in p
            else f"{p['raw_parameters']} parameters (no SGLD run of this checkpoint for the LLC)"
        )
        kept = "ranks kept" if s["coordinate_free_kept"] else "a rank moved beyond its bound"
        console.print(
            f"{subject}: {llc}; coordinate check (permutation, positive scaling): {kept}, "
            f"neuron-basis measures changed: {', '.join(s['neuron_basis_changed']) or 'none'}"
        )
