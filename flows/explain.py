"""Explain one input (a test index or a file) through every kernel's surrogate of an attribution run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from kernelscope.data.datasets import read_dataset
from kernelscope.core.errors import KernelscopeError
from kernelscope.surrogate.explain import Query, explain, load_inputs, track_explain
from kernelscope.core.param_types import DatasetName
from kernelscope.core.params import Params
from kernelscope.core.layout import RunLayout


@task(name="explain-input")
def explain_input(params: Params, root: str, kinds: list[str], query: Query, top_k: int) -> dict[str, Any]:
    return explain(params, RunLayout(root), kinds, query, top_k)


@flow(name="explain")
def explain_flow(params: Params, dataset: DatasetName = "digits10", index: int | None = 0, input_file: str | None = None, top_k: int = 5,
                 outputs: str | None = None, track: bool = True) -> dict[str, Any]:
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
        raise KernelscopeError(f"explain: index {index} is out of range for the {len(ds.test.y)} test points of {dataset}; pass index or input_file.")
    kinds = list(params.kernel.kinds)
    result = explain_input(params, str(layout.root), kinds, query, top_k)
    get_run_logger().info("explained %s: NN predicts %d; report %s", query.name, result["nn_prediction"], result["report"])
    if track:
        track_explain(params, dataset, query.name, kinds, top_k, result)
    return result
