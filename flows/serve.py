"""Serve every kernelscope flow as a Prefect deployment: what the Prefect UI's Run button starts.

Each deployment's parameters are typed (``params`` is the pydantic model of params.yaml), so the
UI shows a form with every field, its type and its description, filled with params.yaml's values.
The API checks a run's parameters against that schema when the run is created (an unknown top-level
name such as ``parms`` included), and the flow validates them again with pydantic when it starts: a
bad value fails at once, naming the field.

    python -m flows.serve [--params params.yaml]      (needs PREFECT_API_URL: see infra/README.md)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from prefect.utilities.callables import ParameterSchema

import flows  # noqa: F401  (applies the project-local tool defaults)
from flows.counterfactual import counterfactual
from flows.forensics import forensics
from flows.loss_kernel import loss_kernel, multitask
from flows.loss_kernel_sweep import loss_kernel_sweep
from flows.main import pipeline
from flows.structure import structure
from flows.surrogate import attribution, explain_flow, faithfulness_table
from kernelscope.core.errors import KernelscopeError
from kernelscope.core.params import Params, load_params

TAGS = ["kernelscope"]


def deployments(params: Params, params_file: str = "params.yaml") -> list[Any]:
    """One deployment per flow, with params.yaml's values as the form's defaults."""
    defaults = params.model_dump(mode="json")
    first, last = params.datasets[0], params.datasets[-1]
    note = f"Defaults from {params_file}; edit any field of the form before clicking Run."
    specs = [
        (
            attribution,
            "attribution",
            {"params": defaults, "dataset": first},
            "Kernels, kGLM surrogates and faithfulness for one dataset.",
        ),
        (
            faithfulness_table,
            "faithfulness-table",
            {"params": defaults},
            "Multi-seed faithfulness table (the paper's Table 1).",
        ),
        (
            forensics,
            "forensics",
            {"params": defaults},
            "BadNets poisoning, detection by nearest training points, trace-back.",
        ),
        (
            counterfactual,
            "counterfactual",
            {"params": defaults, "dataset": last},
            "Retrain on subsets and rank every attributor by its LDS (run attribution first).",
        ),
        (
            loss_kernel,
            "loss-kernel",
            {"params": defaults, "dataset": last},
            "SGLD probe losses and the loss kernel (run attribution first).",
        ),
        (
            multitask,
            "loss-kernel-multitask",
            {"params": defaults},
            "The loss kernel's multitask validation on modular arithmetic.",
        ),
        (
            loss_kernel_sweep,
            "loss-kernel-sweep",
            {"params": defaults},
            "The multitask task separation over training seeds × ε × γ × nβ: AUC heat maps and sampler health.",
        ),
        (
            structure,
            "structure",
            {"params": defaults, "subject": params.structure.subjects[-1]},
            "Layer-Jacobian rank, degeneracy and the interaction basis of one model "
            "(run attribution or the multitask flow first).",
        ),
        (
            explain_flow,
            "explain",
            {"params": defaults, "dataset": last, "index": 0},
            "Explain one test point (run attribution first).",
        ),
        (
            pipeline,
            "kernelscope-pipeline",
            {"params": defaults},
            "Every flow of the platform, in order (the main job).",
        ),
    ]
    built = [
        flow.to_deployment(
            name=name, parameters=parameters, description=f"{text} {note}", tags=TAGS, enforce_parameter_schema=True
        )
        for flow, name, parameters, text in specs
    ]
    for deployment in built:
        deployment._parameter_openapi_schema = closed_schema(deployment._parameter_openapi_schema)
    return built


class ClosedParameterSchema(ParameterSchema):
    """A flow's parameter schema that refuses unknown top-level names (Prefect's allows any:
    ``{"parms": {}}`` would pass)."""

    additionalProperties: bool = False


def closed_schema(schema: ParameterSchema) -> ClosedParameterSchema:
    # Set explicitly: the deployment sends its schema with model_dump(exclude_unset=True), which drops defaults.
    return ClosedParameterSchema(**schema.model_dump(), additionalProperties=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve every kernelscope flow as a Prefect deployment.")
    parser.add_argument(
        "--params", default="params.yaml", help="defaults shown in the UI's run form (default: params.yaml)"
    )
    parser.add_argument("--limit", type=int, default=2, help="flow runs executed at once by this process (default: 2)")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: PREFECT_API_URL is not set; start the servers with `make ui` (or export PREFECT_API_URL=http://127.0.0.1:4200/api).",
            file=sys.stderr,
        )
        return 2
    try:
        params = load_params(args.params)
    except KernelscopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from prefect import serve

    serve(*deployments(params, args.params), limit=args.limit, print_starting_message=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
