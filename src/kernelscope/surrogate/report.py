"""One self-contained HTML page per run: tables and every figure, images embedded as base64."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from kernelscope import __version__
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.fileio import write_text_atomic
from kernelscope.core.json_artifacts import read_json_artifact, read_table_json
from kernelscope.models.checkpoint import read_sidecar

FIGURES = (
    ("probabilities.png", "kGLM vs NN correct-class probability (logit scale)"),
    ("linearization.png", "Linearization parity plot (App. L)"),
    ("attribution_by_class.png", "Mean attribution from each training class to each logit (Fig. 2B)"),
)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" data-figure="{html.escape(path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _html_table(path: Path) -> str:
    """A verified table artifact as HTML (every cell escaped)."""
    header, rows = read_table_json(path)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


COUNTERFACTUAL_SECTIONS = (  # (table, heading, (figure, caption) ...) of counterfactual/
    ("lds", "LDS per attributor", (("lds.png", "LDS with 95% intervals"), ("lds_vs_cost.png", "LDS against seconds"))),
    ("brittleness", "brittleness", (("brittleness.png", "predictions flipped against k removed"),)),
    ("mislabel", "mislabel detection", (("mislabel.png", "flipped labels found against the fraction inspected"),)),
)


def build_report(run_dir: str | Path, table_dir: str | Path | None = None) -> dict[str, Any]:
    """Write <run_dir>/report.html; return its path and the figures it embeds."""
    run_dir = Path(run_dir)
    if not (run_dir / "model" / "model.json").is_file():
        raise KernelscopeError(f"{run_dir}: not a run folder (no model/model.json); pass e.g. outputs/flows/digits10.")
    model_meta = read_sidecar(run_dir / "model")
    figures: list[str] = []
    parts = [
        f"<h1>kernelscope report: {html.escape(run_dir.name)}</h1>",
        f"<p>Architecture: <code>{html.escape(json.dumps(model_meta['architecture']))}</code><br>"
        f"NN accuracy: train {model_meta['metrics']['train_accuracy']:.4f}, "
        f"test {model_meta['metrics']['test_accuracy']:.4f}<br>"
        f"Checkpoint sha256 <code>{model_meta['weights_sha256'][:16]}…</code>, dataset hash "
        f"<code>{model_meta['dataset']['hash'][:16]}…</code>, kernelscope {__version__}</p>",
    ]
    comparison = run_dir / "comparison"
    if (comparison / "comparison.json").is_file():
        parts += ["<h2>Kernel comparison (Table 2 shape)</h2>", _html_table(comparison / "comparison.json")]
        for png in sorted(comparison.glob("*.png")):
            caption = (
                "τ_K and TAD per kernel"
                if png.name == "comparison.png"
                else f"Residuals against the exact kernel: {png.stem}"
            )
            parts.append(_img(png, caption))
            figures.append(f"comparison/{png.name}")
    if table_dir is not None and (Path(table_dir) / "faithfulness_table.json").is_file():
        parts += [
            "<h2>Multi-seed faithfulness (Table 1 format)</h2>",
            _html_table(Path(table_dir) / "faithfulness_table.json"),
        ]
    for kind_dir in sorted((run_dir / "kglm").glob("*")) if (run_dir / "kglm").is_dir() else []:
        metrics_file = kind_dir / "metrics.json"
        if not metrics_file.is_file():
            continue
        m = {
            k: (float("nan") if v is None else v) for k, v in read_json_artifact(metrics_file, "metrics").items()
        }  # null: undefined
        parts.append(
            f"<h2>{html.escape(kind_dir.name)}</h2><p>τ_K {m['tau_k']:.3f} · TAD {m['tad']:+.2f} pts · "
            f"R_Miss {m['r_miss']:.3f} · linearization {html.escape(str(m.get('linearization')))} "
            f"R² {m.get('r2_linearization', float('nan')):.3f}</p>"
        )
        for name, caption in FIGURES:
            if (kind_dir / name).is_file():
                parts.append(_img(kind_dir / name, f"{kind_dir.name}: {caption}"))
                figures.append(f"kglm/{kind_dir.name}/{name}")
    counterfactual = run_dir / "counterfactual"
    for table, heading, plots in COUNTERFACTUAL_SECTIONS:
        if (counterfactual / f"{table}.json").is_file():
            parts += [f"<h2>Counterfactual evaluation: {heading}</h2>", _html_table(counterfactual / f"{table}.json")]
            for name, caption in plots:
                if (counterfactual / name).is_file():
                    parts.append(_img(counterfactual / name, caption))
                    figures.append(f"counterfactual/{name}")
    for explanation in (
        sorted((run_dir / "explain").glob("*/explanation.json")) if (run_dir / "explain").is_dir() else []
    ):
        e = read_json_artifact(explanation, "explanation")
        parts.append(
            f"<h2>Explanation: {html.escape(e['query'])}</h2>"
            f"<p>true label {e['label']}, NN prediction {e['nn_prediction']}</p>"
        )
        for key, caption in (
            ("boxplot", "Attribution by training class (Fig. 2C)"),
            ("grid", "Top-5 most similar training images (App. M.2)"),
        ):
            if key in e and Path(e[key]).is_file():
                parts.append(_img(Path(e[key]), caption))
                figures.append(f"explain/{explanation.parent.name}/{Path(e[key]).name}")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:8px}"
        "img{max-width:520px}figcaption{font-size:12px;color:#555}"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>kernelscope · {html.escape(run_dir.name)}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = run_dir / "report.html"
    write_text_atomic(path, page)
    return {"path": str(path), "figures": figures}


def track_report(params: Any, dataset: str, result: dict[str, Any], source: str | None = None) -> str:
    """Log a built report to the 'attribution' experiment, next to the runs it summarizes."""
    from kernelscope.core.params import params_hash
    from kernelscope.core.tracking import RunTags, log_run

    return log_run(
        "attribution",
        f"{dataset}-report",
        tags=RunTags("report", dataset, ",".join(params.kernel.kinds), params.seed, params_hash(params)),
        params={"dataset": dataset},
        metrics={"figures": len(result["figures"])},
        artifacts=[result["path"]],
        source=source,
    )
